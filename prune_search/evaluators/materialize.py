"""Physical pruning of a candidate with torch-pruning, and the JSON plan that replays it."""

import copy
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.importance import Importance
from prune_search.evaluators.selection import select_channels
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.space.attention import attention_blocks, slice_head_tables, sync_widths
from prune_search.space.structure import Group

PLAN_FORMAT = "prune-search/plan"


@dataclass(frozen=True)
class PruningPlan:
    """What was pruned, as plain data.

    ``kept[group]``: the root channels kept (ascending, original numbering);
    ``strategies[group]``: the strategy that chose them; ``history``: torch-pruning's
    pruning history (``[module, is_out, idxs]`` steps) that replays the plan on a fresh,
    unpruned model; ``input_shape``: the example input used for tracing, ``[1, C, H, W]``.
    """

    kept: dict[str, list[int]]
    strategies: dict[str, str]
    history: list[list[Any]]
    input_shape: list[int]

    def to_json(self) -> str:
        return json.dumps({"format": PLAN_FORMAT, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> "PruningPlan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PruneSearchError(f"the pruning plan is not valid JSON ({exc})") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> "PruningPlan":
        """The plan stored as ``data`` (parsed JSON); a one-line error saying what is missing or malformed."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise PruneSearchError("the file is not a prune-search pruning plan")
        problem = plan_problem(data)
        if problem is not None:
            raise PruneSearchError(f"the pruning plan is damaged: {problem}")
        return cls(data["kept"], data["strategies"], data["history"], data["input_shape"])


def _indices(value: Any) -> bool:
    return type(value) is list and all(type(i) is int and i >= 0 for i in value)


def plan_problem(data: dict[str, Any]) -> str | None:
    """What is missing or of the wrong type in a stored plan ``data``, or None."""
    missing = [key for key in ("kept", "strategies", "history", "input_shape") if key not in data]
    if missing:
        return f"it lacks {', '.join(repr(key) for key in missing)}"
    kept, strategies, history, shape = data["kept"], data["strategies"], data["history"], data["input_shape"]
    if type(kept) is not dict or not all(type(k) is str and _indices(v) for k, v in kept.items()):
        return "'kept' is not a map of group names to lists of channel indices"
    if type(strategies) is not dict or not all(type(k) is str and type(v) is str for k, v in strategies.items()):
        return "'strategies' is not a map of group names to strategy names"
    steps_ok = type(history) is list and all(
        type(step) is list and len(step) == 3 and type(step[0]) is str and type(step[1]) is bool and _indices(step[2])
        for step in history
    )
    if not steps_ok:
        return "'history' is not a list of [module name, true/false, channel indices] steps"
    if type(shape) is not list or len(shape) < 2 or not all(type(d) is int and d > 0 for d in shape):
        return "'input_shape' is not a list of positive integers"
    return None


def _example(model: nn.Module, shape: list[int]) -> torch.Tensor:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    return torch.zeros(shape, device=device)


def _root_channels(group: Group, removed: set[int]) -> list[int]:
    """The root layer's output channels that carry the ``removed`` root channels (a head: all its features)."""
    root = group.root()
    return sorted(idx for idx, r in zip(root.idxs, root.root_idxs, strict=True) if r in removed)


def materialize(
    model: nn.Module, space: PruningSpace, importance: Importance, candidate: CandidateBatch
) -> tuple[nn.Module, PruningPlan]:
    """A physically pruned copy of ``model`` for one candidate (``len(candidate) == 1``) and its plan.

    Group by group, the channels :func:`select_channels` does not keep are removed with
    torch-pruning, so the result has exactly the widths and channels the proxy scored; attention heads
    lose their per-head bias columns too, and widths that attention models record as attributes (head
    counts, ViT's ``hidden_dim``) are updated (:func:`sync_widths`).
    ``model`` itself is not changed.
    """
    if len(candidate) != 1:
        raise PruneSearchError(f"materialize takes one candidate, got {len(candidate)}")
    space.validate(candidate)
    vectors = importance.vectors(space)
    pruned = copy.deepcopy(model)
    was_training = pruned.training
    pruned.eval()
    from prune_search.space.graph import build_graph  # torch-pruning, imported where a model is pruned

    graph = build_graph(pruned, _example(pruned, space.structure.input_shape))
    blocks = attention_blocks(pruned)
    modules = dict(pruned.named_modules())
    kept, strategies = {}, {}
    for g, (group, vector) in enumerate(zip(space.groups, vectors, strict=True)):
        strategy = space.strategies[int(candidate.strategy[0, g])]
        keep = select_channels(vector, strategy, int(candidate.keep[0, g]), group.blocks, group.aligned)
        kept[group.name] = keep.tolist()
        strategies[group.name] = strategy
        removed = set(range(group.size)) - set(kept[group.name])
        if removed:
            root = modules[group.name]
            handler = graph.get_pruner_of_module(root).prune_out_channels
            graph.get_pruning_group(root, handler, _root_channels(group, removed)).prune()
    slice_head_tables(pruned, blocks, kept)
    sync_widths(pruned)
    pruned.train(was_training)
    history = [[name, bool(is_out), [int(i) for i in idxs]] for name, is_out, idxs in graph.pruning_history()]
    return pruned, PruningPlan(kept, strategies, history, list(space.structure.input_shape))


def apply_plan(fresh_model: nn.Module, plan: PruningPlan) -> nn.Module:
    """Replay ``plan`` on a freshly built, unpruned model (in place) and return it.

    Load the pruned state_dict (``torch.load(path, weights_only=True)``) into the result.
    """
    was_training = fresh_model.training
    fresh_model.eval()
    from prune_search.space.graph import build_graph  # torch-pruning, imported where a model is pruned

    graph = build_graph(fresh_model, _example(fresh_model, plan.input_shape))
    blocks = attention_blocks(fresh_model)
    try:
        graph.load_pruning_history(plan.history)
    except (KeyError, IndexError) as exc:
        raise PruneSearchError(
            f"the pruning plan does not fit this model ({exc}); build the model it was made for"
        ) from None
    slice_head_tables(fresh_model, blocks, plan.kept)
    sync_widths(fresh_model)
    fresh_model.train(was_training)
    return fresh_model
