"""Tracing a model: example forward pass, DependencyGraph, groups and layer geometry."""

import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from math import gcd, prod

import torch
import torch_pruning as tp
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.space.attention import (
    attention_blocks,
    attention_layer,
    fixed_width_blocks,
    head_group,
    mha_layers,
    mha_members,
    mha_problem,
)
from prune_search.space.deadline import TRACE_TIMEOUT_ENV, run_within, trace_timeout_s
from prune_search.space.flops import counted_macs
from prune_search.space.graph import LayersCalled, build_graph, quiet_depth_warnings, shuffle_coupled
from prune_search.space.structure import (
    BATCHNORM,
    CONV,
    LINEAR,
    NORM,
    PARAMETER,
    Group,
    Layer,
    Member,
    Structure,
)

_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.modules.conv._ConvNd, CONV),
    (nn.Linear, LINEAR),
    (nn.modules.batchnorm._BatchNorm, BATCHNORM),
    (nn.LayerNorm, NORM),
    (nn.GroupNorm, NORM),
)
_PRUNABLE = "Conv, Linear, BatchNorm, LayerNorm and GroupNorm layers"


def _kind(module: nn.Module) -> str | None:
    return next((kind for cls, kind in _KINDS if isinstance(module, cls)), None)


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _depthwise(module: nn.Module) -> bool:
    return 1 < module.groups == module.in_channels == module.out_channels


def _grouped(module: nn.Module) -> bool:
    """A convolution with several channel groups that is not depthwise (groups = in = out channels)."""
    return _kind(module) == CONV and module.groups > 1 and not _depthwise(module)


def _record_forward(
    model: nn.Module, example: Tensor
) -> tuple[dict[nn.Module, Tensor], dict[nn.MultiheadAttention, tuple[Tensor, Tensor]], Tensor]:
    """Run one eval-mode forward pass; return each Conv/Linear/norm layer's output, each
    MultiheadAttention's (query, key) and the model's output."""
    outputs: dict[nn.Module, Tensor] = {}
    attention: dict[nn.MultiheadAttention, tuple[Tensor, Tensor]] = {}
    entered: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    handles = []

    def attended(module: nn.Module, args: tuple, kwargs: dict, _: object) -> None:
        query = args[0] if args else kwargs["query"]
        attention.setdefault(module, (query, args[1] if len(args) > 1 else kwargs["key"]))

    for module in model.modules():
        if not any(module.children()):
            handles.append(module.register_forward_pre_hook(lambda m, _: entered.append(names[m])))
        if _kind(module):
            handles.append(module.register_forward_hook(lambda m, _, out: outputs.setdefault(m, out)))
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(attended, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), LayersCalled(model):
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
    return outputs, attention, result


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
    if kind == NORM:
        group_norm = isinstance(module, nn.GroupNorm)
        channels = module.num_channels if group_norm else module.normalized_shape[-1]
        per_channel = _own_params(module) // channels
        groups = module.num_groups if group_norm else 1
        return Layer(name, kind, channels, channels, per_channel, 1, groups, module.bias is not None, per_channel > 0)
    channels = module.num_features
    return Layer(name, kind, channels, channels, 1, 1, 1, False, module.affine)


def _parameter_layer(name: str, parameter: nn.Parameter, dim: int) -> Layer:
    """An unwrapped parameter that torch-pruning slices along ``dim``: its channels and elements per channel."""
    channels = parameter.shape[dim]
    return Layer(name, PARAMETER, channels, channels, parameter.numel() // channels, 1, 1, False, False)


def _member(
    names: dict[nn.Module | nn.Parameter, str], item: "tp.dependency.GroupItem", dg: tp.DependencyGraph
) -> Member | None:
    """The layer (or unwrapped parameter) dimension ``item`` prunes; None for torch-pruning's own ops."""
    target = item.dep.target.module
    if target not in names:
        return None
    return Member(
        module=names[target],
        out=bool(dg.is_out_channel_pruning_fn(item.dep.handler)),
        idxs=[int(i) for i in item.idxs],
        root_idxs=[int(i) for i in item.root_idxs],
    )


def _producer(dg: tp.DependencyGraph, module: nn.Module) -> nn.Module | None:
    """The layer (Conv, Linear or norm) whose output ``module`` takes through a chain of single-input ops
    (activations, dropout), or None when the chain merges several inputs first."""
    node = dg.module2node[module]
    while len(node.inputs) == 1:
        node = node.inputs[0]
        if isinstance(node.module, nn.Module) and _kind(node.module):
            return node.module
    return None


def _tied(
    group: Group, modules: dict[str, nn.Module], names: dict[nn.Module, str], dg: tp.DependencyGraph
) -> str | None:
    """A channel-preserving layer of ``group`` (norm, depthwise convolution) that carries other root channels
    than the layer of ``group`` feeding it.

    GhostNet concatenates a map with a depthwise function of itself: both halves of the root channels then
    hang on the same producer channels, which torch-pruning records for one half only.
    """
    roots = {m.module: set(m.root_idxs) for m in group.members if m.out}
    for member in group.members:
        module = modules[member.module]
        through = _kind(module) in (BATCHNORM, NORM) or (_kind(module) == CONV and _depthwise(module))
        producer = _producer(dg, module) if member.out and through else None
        if producer is not None and names[producer] in roots and roots[names[producer]] != roots[member.module]:
            return (
                f"layer '{member.module}' and the layer '{names[producer]}' feeding it carry different channels "
                f"of group '{group.name}' (a map concatenated with a function of itself, as in GhostNet)"
            )
    return None


def _whole_layers(model: nn.Module) -> set[nn.Module]:
    """Layers whose channels stay whole, with every group that reaches them:

    - the layers of Swin's patch mergings (timm's and torchvision's ``PatchMerging``), which take 2×2
      neighbouring positions folded into their channels: four copies of each incoming channel, of which
      torch-pruning maps one;
    - the projections of torchvision's Swin and MaxViT attention, whose head width follows the input width
      (:func:`~prune_search.space.attention.fixed_width_blocks`)."""
    merging = [
        getattr(module, key, None)
        for module in model.modules()
        if type(module).__name__.startswith("PatchMerging")
        for key in ("norm", "reduction")
    ]
    attention = [layer for _, layers in fixed_width_blocks(model) for layer in layers]
    return {layer for layer in [*merging, *attention] if isinstance(layer, nn.Module)}


def _merged(members: list[Member]) -> list[Member]:
    """One member per layer dimension: torch-pruning lists a dimension once per path that reaches it, each
    with the (channel, root channel) pairs of that path; the member holds every distinct pair."""
    pairs: dict[tuple[str, bool], dict[tuple[int, int], None]] = {}
    for m in members:
        pairs.setdefault((m.module, m.out), {}).update(dict.fromkeys(zip(m.idxs, m.root_idxs, strict=True)))
    return [
        Member(module, out, [i for i, _ in found], [r for _, r in found])
        for (module, out), found in ((key, list(value)) for key, value in pairs.items())
    ]


def ignore_hint(names: Sequence[str]) -> str:
    """What a refusal tells the user to do: the flag and the Python argument that leave ``names`` unpruned."""
    return f"pass --ignore-layers {','.join(names)} (Python: ignored_layers={list(names)!r})"


def _problem(group: Group, modules: dict[str, nn.Module], parameters: dict[str, Layer]) -> str | None:
    """Why prune-search cannot prune ``group``, or None."""
    for member in group.members:
        module = modules[member.module]
        kind = _kind(module)
        if kind is None and not isinstance(module, nn.MultiheadAttention):
            return (
                f"layer '{member.module}' ({type(module).__name__}) is coupled to group '{group.name}', but "
                f"prune-search can only prune {_PRUNABLE}"
            )
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
            return (
                f"LayerNorm '{member.module}' in group '{group.name}' normalises over several dimensions "
                f"{list(module.normalized_shape)}; prune-search prunes a LayerNorm over the channels alone"
            )
        if _grouped(module) and module.transposed:
            return (
                f"grouped transposed convolution '{member.module}' (groups={module.groups}) in group "
                f"'{group.name}' is not supported"
            )
        if kind == CONV and 1 < module.groups == module.out_channels != module.in_channels:
            return (
                f"convolution '{member.module}' in group '{group.name}' has groups = out_channels = {module.groups} "
                f"but {module.in_channels} input channels, which torch-pruning prunes as a depthwise convolution"
            )
    for member in group.parameters:
        if max(member.idxs) >= parameters[member.module].out_channels:
            return (
                f"torch-pruning would slice parameter '{member.module}' of group '{group.name}' along a dimension "
                "that is not the group's channels"
            )
    for member in [*group.members, *group.parameters]:
        roots_of: dict[int, set[int]] = {}
        for idx, root in zip(member.idxs, member.root_idxs, strict=True):
            roots_of.setdefault(idx, set()).add(root)
        if any(len(roots) > 1 for roots in roots_of.values()):
            return (
                f"each channel of layer '{member.module}' is tied to several channels of group '{group.name}' "
                "(a concatenation of a map with a function of itself, as in GhostNet)"
            )
        if len(set(Counter(member.root_idxs).values())) != 1:
            return (
                f"layer '{member.module}' takes some channels of group '{group.name}' more often than others "
                "(a slice or repeat)"
            )
    return None


def _runs(group: Group) -> list[int]:
    """Boundaries of the contiguous runs of root channels that partial members take (see ``Group.partial``)."""
    edges = []
    for member in [*group.members, *group.parameters]:
        covered = sorted(set(member.root_idxs))
        if len(covered) < group.size:
            gaps = [(a, b) for a, b in pairwise(covered) if b != a + 1]
            edges += [covered[0], covered[-1] + 1, *(a + 1 for a, _ in gaps), *(b for _, b in gaps)]
    return edges


def _blocks(group: Group, modules: dict[str, nn.Module]) -> tuple[int, bool] | str:
    """``(blocks, aligned)`` of ``group`` (see :class:`Group`), or why its channel groups cannot be kept valid.

    Every grouped convolution, GroupNorm and MultiheadAttention member splits the root channels into its
    groups' (heads') contiguous blocks, and every partial member (a branch of an uneven concatenation or
    split) takes contiguous runs of them; blocks of the gcd of those sizes and run boundaries refine them
    all, so equal counts (or, when a grouped convolution takes the channels as input, equal positions) per
    block keep every member's groups valid and give each branch its share of the keep count.
    """
    edges = _runs(group)
    sizes, aligned = ([gcd(group.size, *edges)] if edges else []), False
    for member in group.members:
        module = modules[member.module]
        if isinstance(module, nn.GroupNorm):
            count, width = module.num_groups, module.num_channels
        elif isinstance(module, nn.MultiheadAttention):  # its heads must stay equally wide
            if member.out:
                continue
            count, width = module.num_heads, module.embed_dim
        elif _grouped(module):
            count, width = module.groups, module.out_channels if member.out else module.in_channels
            aligned = aligned or not member.out
        else:
            continue
        if count == 1:
            continue
        if width != group.size or sorted(zip(member.root_idxs, member.idxs, strict=True)) != [
            (i, i) for i in range(width)
        ]:
            return (
                f"layer '{member.module}' ({type(module).__name__}) splits its {width} channels into {count} "
                f"groups, but group '{group.name}' covers them only in part or reordered (a concatenation or slice)"
            )
        sizes.append(width // count)
    return (group.size // gcd(*sizes), aligned) if sizes else (1, False)


def _refusal(problems: list[tuple[str, str]]) -> PruneSearchError:
    """One error for every (reason, layer to ignore) pair: the first reason, and every layer to pass."""
    more = len(problems) - 1
    also = f" (and {more} more like it)" if more else ""
    roots = list(dict.fromkeys(root for _, root in problems))
    return PruneSearchError(f"{problems[0][0]}{also}; {ignore_hint(roots)}")


def _named(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """The modules ``names`` name and every module inside them; a one-line error for an unknown name."""
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        close = difflib.get_close_matches(unknown[0], [name for name in modules if name], n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        layers = [name for name, module in modules.items() if _kind(module) in (CONV, LINEAR)][:4]
        raise PruneSearchError(
            f"ignored layer '{unknown[0]}' is not a module of the model{guess}; names are those of "
            f"model.named_modules(), e.g. {', '.join(layers)}"
        )
    return [inner for name in names for inner in modules[name].modules()]


@dataclass
class _Progress:
    """What a trace is doing, written by the tracing thread and read when it runs out of time."""

    step: str = "running the example forward pass"
    layer: str | None = None


def _advice(progress: _Progress, more: str = "") -> str:
    """What to do about the layer a trace was at: ignore it (or a module holding it)."""
    if progress.layer is None:
        return f"torch-pruning cannot follow this architecture yet{more}"
    parts = progress.layer.split(".")
    holder = f" or a module holding it, e.g. {'.'.join(parts[:2])}," if len(parts) > 2 else ""
    return f"torch-pruning cannot follow this layer's channels: {ignore_hint([progress.layer])}{holder}{more}"


def _failed(model: nn.Module, exc: Exception, progress: _Progress) -> PruneSearchError:
    """The error of a trace that torch-pruning ended with an exception: where it was, and what to do."""
    reason = (str(exc).strip().splitlines() or [""])[0][:160]
    return PruneSearchError(
        f"building the pruning space of {type(model).__name__} failed while {progress.step} "
        f"({type(exc).__name__}: {reason}); {_advice(progress)}"
    )


def _late(model: nn.Module, seconds: float, progress: _Progress) -> PruneSearchError:
    """The error of a trace that ran out of time: where it was, and what to do."""
    return PruneSearchError(
        f"building the pruning space of {type(model).__name__} took more than {seconds:g} s (it was "
        f"{progress.step}); {_advice(progress, f' (or allow more time with ${TRACE_TIMEOUT_ENV})')}"
    )


def trace_structure(model: nn.Module, example_inputs: Tensor, ignored_layers: Iterable[str] = ()) -> Structure:
    """Groups and layer geometry of ``model`` on ``example_inputs`` (``[B, C, H, W]``).

    The classifier (the last Conv/Linear the forward pass runs) and ``ignored_layers`` (qualified
    names as in ``model.named_modules()``; a container stands for every module in it) are never
    pruned: groups rooted at or coupled to them are left out, and so are groups whose channel
    groups allow no keep count below the full width (e.g. the input of a grouped convolution with
    one channel per group), groups whose channels pass a split along the channels (the model's
    code fixes the split sizes), reach a channel shuffle or enter a Swin patch merging. The branches
    of an uneven concatenation are pruned, each by its share (see :class:`Group`). A trace that
    takes longer than ``$PRUNE_SEARCH_TRACE_TIMEOUT_S`` (default 120 s) ends in a one-line error.
    """
    if not isinstance(example_inputs, Tensor):
        raise PruneSearchError("example inputs must be a tensor shaped like one batch [B, C, H, W]")
    ignored = _named(model, list(ignored_layers))
    seconds = trace_timeout_s()
    progress = _Progress()
    return run_within(
        seconds, lambda: _quiet_trace(model, example_inputs, ignored, progress), lambda: _late(model, seconds, progress)
    )


def _quiet_trace(model: nn.Module, example_inputs: Tensor, ignored: list[nn.Module], progress: _Progress) -> Structure:
    with quiet_depth_warnings():
        try:
            return _trace(model, example_inputs, ignored, progress)
        except PruneSearchError:
            raise
        except Exception as exc:  # torch-pruning fails in many ways on constructs it cannot follow (Swin-S)
            raise _failed(model, exc, progress) from None


def _trace(model: nn.Module, example_inputs: Tensor, ignored: list[nn.Module], progress: _Progress) -> Structure:
    outputs, traced_attention, _ = _record_forward(model, example_inputs)
    # an ignored MultiheadAttention keeps every channel: its MACs are a measured constant like any unmodelled op
    attention = {mha: inputs for mha, inputs in traced_attention.items() if mha not in ignored}
    names = {module: name for name, module in model.named_modules()}
    modules = {name: module for module, name in names.items()}
    order = {module: index for index, module in enumerate(names)}
    costed = [m for m in outputs if _kind(m) in (CONV, LINEAR)]
    classifier = max(costed, key=lambda m: list(outputs).index(m))
    progress.step = "building torch-pruning's dependency graph"

    def on_group(module: nn.Module) -> None:
        progress.layer = names.get(module)
        progress.step = f"grouping the channels of layer '{progress.layer}' ({type(module).__name__})"

    dg = build_graph(model, example_inputs, on_group)
    untraced = [names[m] for m in outputs if _own_params(m) and m not in dg.module2node]
    if untraced:
        raise PruneSearchError(
            f"torch-pruning cannot trace layer '{untraced[0]}': it is not connected to the output in the autograd "
            "graph (detach, numpy or a non-differentiable op); make its forward differentiable"
        )
    skipped = {classifier, *ignored}
    # a channel shuffle permutes channels in a way torch-pruning cannot map: what reaches one stays whole
    shuffled = sorted((m for m in shuffle_coupled(dg) if m not in skipped), key=order.__getitem__)
    problems: list[tuple[str, str]] = []
    parameter_names = {p: name for name, p in model.named_parameters()}
    heads = {block.qkv: block for block in attention_blocks(model)}
    by_name = dict(model.named_parameters())
    tables = [(table, by_name[table], 1) for block in heads.values() for table in block.tables]
    # the per-head tables are left out of torch-pruning's groups but still listed among its unwrapped parameters
    unwrapped = list(
        {
            name: (name, p, dim)
            for name, p, dim in [*((parameter_names[p], p, dim) for p, dim in dg.unwrapped_parameters), *tables]
        }.values()
    )
    parameters = {name: _parameter_layer(name, p, dim) for name, p, dim in unwrapped}
    targets: dict[nn.Module | nn.Parameter, str] = {**names, **parameter_names}
    groups = []
    whole = _whole_layers(model)
    roots = sorted(
        dg.get_all_groups(
            ignored_layers=[*skipped, *shuffled, *whole], root_module_types=(nn.modules.conv._ConvNd, nn.Linear)
        ),
        key=lambda g: order[g[0].dep.target.module],
    )
    for mha, (query, key) in attention.items():
        problem = mha_problem(names[mha], mha, query, key)
        if problem is not None:
            problems.append((problem, names[mha]))
    for raw in roots:
        if any(isinstance(item.dep.target.module, tp.ops._SplitOp) for item in raw):
            continue  # the model's code fixes the split sizes (and torch-pruning may swap the parts): left whole
        if any(item.dep.target.module in whole for item in raw):
            continue  # fixed by the model's code (a Swin patch merging, torchvision's Swin attention)
        members = [m for m in (_member(targets, item, dg) for item in raw) if m is not None]
        unique = _merged(
            [
                expanded
                for m in members
                for expanded in (
                    mha_members(m, modules[m.module].embed_dim)
                    if isinstance(modules.get(m.module), nn.MultiheadAttention)
                    else [m]
                )
            ]
        )
        group = Group(
            names[raw[0].dep.target.module],
            len(raw[0].idxs),
            [m for m in unique if m.module not in parameters],
            [m for m in unique if m.module in parameters],
        )
        if group.name in heads:
            group = head_group(group, heads[group.name]) or group
        problem = _problem(group, modules, parameters) or _tied(group, modules, names, dg)
        layout = _blocks(group, modules) if problem is None else problem
        if isinstance(layout, str):
            problems.append((layout, group.name))
            continue
        blocks, aligned = layout
        if blocks < group.size or group.size == 1:  # else no keep count below the full width is valid
            groups.append(replace(group, blocks=blocks, aligned=aligned))
    if problems:
        raise _refusal(problems)
    batch = example_inputs.shape[0]
    layers = [_layer(names[m], m, out, batch) for m, out in outputs.items()] + list(parameters.values())
    layers += [
        attention_layer(block, modules[block.proj], outputs[modules[block.proj]], batch)
        for block in heads.values()
        if modules[block.proj] in outputs
    ]
    layers += [layer for mha, (query, _) in attention.items() for layer in mha_layers(names[mha], mha, query, batch)]
    costed = [*outputs, *attention, *(mha.out_proj for mha in attention)]
    costed_params = sum(_own_params(m) for m in costed) + sum(p.numel() for _, p, _ in unwrapped)
    other = sum(p.numel() for p in model.parameters()) - costed_params
    was_training = model.training
    try:
        counted = counted_macs(model.eval(), example_inputs[:1])
    finally:
        model.train(was_training)
    return Structure(groups, layers, other, [1, *example_inputs.shape[1:]], counted)
