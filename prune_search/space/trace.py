"""Tracing a model: example forward pass, DependencyGraph, groups and layer geometry."""

from collections import Counter
from collections.abc import Iterable
from math import prod

import torch
import torch_pruning as tp
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.space.structure import BATCHNORM, CONV, LINEAR, Group, Layer, Member, Structure

_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.modules.conv._ConvNd, CONV),
    (nn.Linear, LINEAR),
    (nn.modules.batchnorm._BatchNorm, BATCHNORM),
)


def _kind(module: nn.Module) -> str | None:
    return next((kind for cls, kind in _KINDS if isinstance(module, cls)), None)


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _record_forward(model: nn.Module, example: Tensor) -> tuple[dict[nn.Module, Tensor], Tensor]:
    """Run one eval-mode forward pass; return each Conv/Linear/BN's output and the model's output."""
    outputs: dict[nn.Module, Tensor] = {}
    entered: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    handles = []
    for module in model.modules():
        if not any(module.children()):
            handles.append(module.register_forward_pre_hook(lambda m, _: entered.append(names[m])))
        if _kind(module):
            handles.append(module.register_forward_hook(lambda m, _, out: outputs.setdefault(m, out)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(example)
    except Exception as exc:
        where = f" in layer '{entered[-1]}'" if entered else ""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PruneSearchError(
            f"the model's forward pass failed{where} on an example input of shape {list(example.shape)} "
            f"({reason}); pass an example input shaped like one training batch [B, C, H, W]"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not isinstance(result, Tensor) or result.dim() != 2:
        raise PruneSearchError("the model must return logits shaped [batch, classes] for prune-search to search it")
    return outputs, result


def _layer(name: str, module: nn.Module, output: Tensor, batch: int) -> Layer:
    kind = _kind(module)
    if kind == CONV:
        return Layer(
            name,
            kind,
            module.in_channels,
            module.out_channels,
            prod(module.kernel_size),
            prod(output.shape[2:]),
            module.groups,
            module.bias is not None,
            False,
        )
    if kind == LINEAR:
        positions = output.numel() // (batch * module.out_features)
        return Layer(
            name, kind, module.in_features, module.out_features, 1, positions, 1, module.bias is not None, False
        )
    channels = module.num_features
    return Layer(name, kind, channels, channels, 1, 1, 1, False, module.affine)


def _member(names: dict[nn.Module, str], item: "tp.dependency.GroupItem", dg: tp.DependencyGraph) -> Member | None:
    module = item.dep.target.module
    if module not in names:
        return None
    return Member(
        module=names[module],
        out=bool(dg.is_out_channel_pruning_fn(item.dep.handler)),
        idxs=[int(i) for i in item.idxs],
        root_idxs=[int(i) for i in item.root_idxs],
    )


def _check_group(group: Group, modules: dict[str, nn.Module]) -> None:
    for member in group.members:
        module = modules[member.module]
        kind = _kind(module)
        if kind is None:
            raise PruneSearchError(
                f"layer '{member.module}' ({type(module).__name__}) is coupled to group '{group.name}', but "
                "prune-search can only prune Conv, Linear and BatchNorm layers; add it to the ignored layers"
            )
        if kind == CONV and module.groups > 1 and not (module.groups == module.in_channels == module.out_channels):
            raise PruneSearchError(
                f"grouped convolution '{member.module}' (groups={module.groups}) in group '{group.name}' is not "
                "supported; add its producer to the ignored layers"
            )
        counts = Counter(member.root_idxs)
        if set(counts) != set(range(group.size)) or len(set(counts.values())) != 1:
            raise PruneSearchError(
                f"layer '{member.module}' takes an uneven share of group '{group.name}' (split or slice); "
                "add the group's root to the ignored layers"
            )


def _named(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise PruneSearchError(
            f"ignored layer '{unknown[0]}' is not a module of the model; names look like 'layer1.0.conv1'"
        )
    return [modules[name] for name in names]


def trace_structure(model: nn.Module, example_inputs: Tensor, ignored_layers: Iterable[str] = ()) -> Structure:
    """Groups and layer geometry of ``model`` on ``example_inputs`` (``[B, C, H, W]``).

    The classifier (the last Conv/Linear the forward pass runs) and ``ignored_layers``
    (qualified names) are never pruned: groups rooted at them are left out.
    """
    if not isinstance(example_inputs, Tensor):
        raise PruneSearchError("example inputs must be a tensor shaped like one batch [B, C, H, W]")
    outputs, _ = _record_forward(model, example_inputs)
    names = {module: name for name, module in model.named_modules()}
    modules = {name: module for module, name in names.items()}
    order = {module: index for index, module in enumerate(names)}
    costed = [m for m in outputs if _kind(m) in (CONV, LINEAR)]
    classifier = max(costed, key=lambda m: list(outputs).index(m))
    ignored = [classifier, *_named(model, ignored_layers)]
    was_training = model.training
    model.eval()
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    finally:
        model.train(was_training)
    untraced = [names[m] for m in outputs if _own_params(m) and m not in dg.module2node]
    if untraced:
        raise PruneSearchError(
            f"torch-pruning cannot trace layer '{untraced[0]}': it is not connected to the output in the autograd "
            "graph (detach, numpy or a non-differentiable op); make its forward differentiable or ignore it"
        )
    groups = []
    roots = sorted(
        dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)),
        key=lambda g: order[g[0].dep.target.module],
    )
    for raw in roots:
        members = [m for m in (_member(names, item, dg) for item in raw) if m is not None]
        unique = list({(m.module, m.out): m for m in members}.values())
        group = Group(names[raw[0].dep.target.module], len(raw[0].idxs), unique)
        _check_group(group, modules)
        groups.append(group)
    batch = example_inputs.shape[0]
    layers = [_layer(names[m], m, out, batch) for m, out in outputs.items()]
    costed_params = sum(_own_params(m) for m in outputs)
    other = sum(p.numel() for p in model.parameters()) - costed_params
    return Structure(groups, layers, other, [1, *example_inputs.shape[1:]])
