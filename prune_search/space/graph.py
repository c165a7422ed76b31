"""torch-pruning's DependencyGraph, built so that a channel shuffle neither crashes it nor is mis-mapped.

A channel shuffle (ShuffleNet's ``view [B, C, H, W] → [B, g, C/g, H, W]``, transpose, ``view`` back)
permutes channels, which torch-pruning 1.6 cannot follow: it treats the transpose as the identity and
divides by zero mapping the views. :class:`ShuffleAwareGraph` records the shapes of every view while tracing,
treats a channel shuffle's views as the identity (so the graph builds), and lists them in
:attr:`ShuffleAwareGraph.shuffles`; :func:`shuffle_coupled` names the layers whose channels reach one, which
the space must leave unpruned.

Layers that a model applies through their weights (``F.linear(x, self.qkv.weight, self.qkv.bias)``, as
torchvision's Swin does) are called as modules while tracing (:class:`LayersCalled`), so that torch-pruning
and the cost trace see a Linear layer there, not an element-wise op that channels flow through.
"""

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from math import prod
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch_pruning._helpers import GroupItem as _GroupItem
from torch_pruning._helpers import _HybridIndex
from torch_pruning.dependency import index_mapping as _index_mapping

from prune_search.space.attention import head_tables

_OPTYPE = tp.ops.OPTYPE
_DEPTH_WARNING = "Maximum recursive depth reached!"  # torch-pruning's shape inference giving up on a long chain


class _ViewShapes(TorchFunctionMode):
    """Records ``(input shape, output shape)`` of every view/reshape by the ``grad_fn`` of its output."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[Any, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def __torch_function__(
        self, func: Callable, types: tuple, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        grad_fn = getattr(out, "grad_fn", None) if isinstance(out, Tensor) else None
        name = grad_fn.name().lower() if grad_fn is not None else ""
        if ("view" in name or "reshape" in name) and args and isinstance(args[0], Tensor):
            self.shapes.setdefault(grad_fn, (tuple(args[0].shape), tuple(out.shape)))  # the op that made it
        return out


class LayersCalled(TorchFunctionMode):
    """Turns ``F.linear(x, layer.weight, layer.bias)`` on an ``nn.Linear`` of ``model`` into ``layer(x)``, so
    its forward hooks run, while the mode is on. A ``nn.MultiheadAttention``'s ``out_proj`` is left alone:
    torch-pruning and the cost model handle that layer as a whole."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        owned = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
        self._layers = {id(m.weight): m for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in owned}

    def __torch_function__(
        self, func: Callable, types: tuple, args: tuple = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is nn.functional.linear and len(args) >= 2:
            layer = self._layers.get(id(args[1]))
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if layer is not None and args[1] is layer.weight and bias is layer.bias:
                return layer(args[0])
        return func(*args, **kwargs)


def _splits_channels(whole: tuple[int, ...], parts: tuple[int, ...]) -> bool:
    """Whether ``parts`` is the feature map ``whole`` = ``[B, C, H, W]`` with C split into several factors."""
    if len(whole) != 4 or len(parts) <= len(whole) or parts[0] != whole[0] or parts[-2:] != whole[2:]:
        return False
    factors = parts[1:-2]
    return prod(factors) == whole[1] and sum(f > 1 for f in factors) > 1


def _is_shuffle_view(shapes: tuple[tuple[int, ...], tuple[int, ...]]) -> bool:
    before, after = shapes
    return _splits_channels(before, after) or _splits_channels(after, before)


class ShuffleAwareGraph(tp.DependencyGraph):
    """A DependencyGraph that treats channel-shuffle views as the identity and lists them in ``shuffles``.

    ``on_group(module)`` is called before the group rooted at ``module`` is computed (a slow trace
    names the layer it was at).
    """

    def __init__(self, on_group: Callable[[nn.Module], None] | None = None) -> None:
        super().__init__()
        self.shuffles: list[tp.dependency.Node] = []
        self._on_group = on_group

    def _trace(
        self, model: nn.Module, example_inputs: Tensor, forward_fn: Callable | None, output_transform: Callable | None
    ) -> dict[nn.Module, tp.dependency.Node]:
        recorder = _ViewShapes()

        def forward(module: nn.Module, inputs: Tensor) -> Any:
            with LayersCalled(model), recorder:
                return forward_fn(module, inputs) if forward_fn is not None else module(inputs)

        module2node = super()._trace(model, example_inputs, forward, output_transform)
        for node in module2node.values():
            if node.type == _OPTYPE.RESHAPE and _is_shuffle_view(recorder.shapes.get(node.grad_fn, ((), ()))):
                node.type = _OPTYPE.ELEMENTWISE  # no index mapping: shuffle_coupled keeps every group off it
                self.shuffles.append(node)
        return module2node

    def get_pruning_group(self, module: nn.Module, pruning_fn: Callable, idxs: Sequence[int]) -> tp.dependency.Group:
        """torch-pruning's group of ``module``'s channels ``idxs``, found by passing on only the (channel, root
        channel) pairs that a layer dimension has not received yet.

        torch-pruning 1.6 walks a dimension again with its whole index list whenever the list differs from
        the ones the group holds, compares every step with every item found so far, and merges the items
        pairwise at the end: quadratic in its steps, of which models that add into slices of their channels
        take hundreds of thousands (RexNet's ``cat([x[:, :c] + shortcut, x[:, c:]])``: minutes per group).
        Every index mapping maps pairs one by one, so passing on the new pairs alone reaches the same pairs.
        Merged as torch-pruning merges, a channel keeps the first pair that reached it: where several root
        channels reach one channel, which one is kept may differ from torch-pruning's walk."""
        if self._on_group is not None:
            self._on_group(module)
        if module not in self.module2node:
            raise ValueError(f"Module {module} is not in the dependency graph.")
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels > 1:
            pruning_fn = tp.pruner.function.prune_depthwise_conv_out_channels
        _index_mapping.update_index_mapping(self)
        root = self.module2node[module]
        start = [_HybridIndex(idx=i, root_idx=i) for i in idxs]
        root_dep = tp.dependency.Dependency(pruning_fn, pruning_fn, source=root, target=root)
        # per (layer dimension, handler), in the order first reached: its first dependency and channel → pair
        members: dict[tuple[tp.dependency.Node, Callable], tuple[Any, dict[int, _HybridIndex]]] = {
            (root, pruning_fn): (root_dep, {pair.idx: pair for pair in start})
        }
        reached: dict[tuple[tp.dependency.Node, Callable], set[_HybridIndex]] = {(root, pruning_fn): set(start)}
        stack = [(root, pruning_fn, start)]
        while stack:
            node, fn, pairs = stack.pop()
            for dep in node.dependencies:
                if not dep.is_triggered_by(fn):
                    continue
                mapped = pairs
                for mapping in dep.index_mapping:
                    if mapping is not None:
                        mapped = mapping(mapped)
                key = (dep.target, dep.handler)
                seen = reached.setdefault(key, set())
                fresh = [pair for pair in dict.fromkeys(mapped) if pair not in seen]
                if fresh:
                    seen.update(fresh)
                    channels = members.setdefault(key, (dep, {}))[1]
                    for pair in fresh:
                        channels.setdefault(pair.idx, pair)
                    stack.append((dep.target, dep.handler, fresh))
        ignored = {id(p) for p in self.ignored_params}
        merged = tp.dependency.Group()
        for dep, channels in members.values():
            if not (isinstance(dep.target.module, nn.Parameter) and id(dep.target.module) in ignored):
                item = _GroupItem(dep, list(channels))
                item.root_idxs = [pair.root_idx for pair in channels.values()]
                merged.items.append(item)
        merged._DG = self
        return merged


_quiet_lock = threading.Lock()
_quiet_users = 0  # blocks (in any thread) inside quiet_depth_warnings: the filter is on while there are any
_quiet_entry: tuple | None = None


@contextmanager
def quiet_depth_warnings() -> Iterator[None]:
    """Hide torch-pruning's "Maximum recursive depth reached!" warnings while the block runs.

    Each block puts one filter first; it stays while any thread is inside such a block, and only that
    entry is removed afterwards (no snapshot restore), so blocks may nest or overlap and filters other
    code sets meanwhile stay."""
    global _quiet_users, _quiet_entry
    with _quiet_lock:
        warnings.filterwarnings("ignore", message=_DEPTH_WARNING, category=UserWarning)  # (back) to the front
        _quiet_entry = warnings.filters[0]
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and _quiet_entry in warnings.filters:
                warnings.filters.remove(_quiet_entry)


def build_graph(
    model: nn.Module, example_inputs: Tensor, on_group: Callable[[nn.Module], None] | None = None
) -> ShuffleAwareGraph:
    """The dependency graph of ``model`` (in eval mode for the trace, then restored) on ``example_inputs``
    (``[B, C, H, W]``), traced with autograd on whatever the caller's grad mode. Attention blocks' per-head
    parameters are left out of it (:func:`~prune_search.space.attention.head_tables`)."""
    was_training = model.training
    model.eval()
    try:
        with quiet_depth_warnings(), torch.enable_grad():
            return ShuffleAwareGraph(on_group).build_dependency(
                model, example_inputs=example_inputs, ignored_params=head_tables(model), verbose=False
            )
    finally:
        model.train(was_training)


def _boundary(node: tp.dependency.Node) -> bool:
    """A layer whose output channels are pruned apart from its input channels (Conv, Linear)."""
    return node.type in (_OPTYPE.CONV, _OPTYPE.LINEAR)


def shuffle_coupled(graph: ShuffleAwareGraph) -> list[nn.Module]:
    """Conv/Linear layers whose output channels reach a channel shuffle of ``graph``, in no set order.

    Walks from every shuffle view through the ops that carry channels unchanged (norms, activations,
    depthwise convs, concatenations, splits, element-wise ops) in both directions, stopping at Conv and
    Linear layers: those reached from their output side, and the depthwise convs passed through.
    """
    found: dict[nn.Module, None] = {}
    seen: set[tp.dependency.Node] = set()
    stack = list(graph.shuffles)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, nn.modules.conv._ConvNd | nn.Linear):
            found[node.module] = None
        if not _boundary(node):  # a Conv/Linear is only ever reached from its output side
            stack.extend(node.inputs)
            stack.extend(consumer for consumer in node.outputs if not _boundary(consumer))
    return list(found)
