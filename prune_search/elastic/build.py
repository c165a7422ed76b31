"""Building an elastic model from a base model and nested levels, checked against torch-pruning."""

from typing import Any

import torch
from torch import nn

from prune_search.elastic.layout import ChannelLayout
from prune_search.elastic.model import ElasticModel, Level, per_level_keys
from prune_search.elastic.nesting import NestedLevels, channel_orders
from prune_search.errors import PruneSearchError
from prune_search.evaluators import Importance, materialize
from prune_search.models import ModelSpec
from prune_search.space import PruningSpace


def build_elastic(
    base: nn.Module,
    spec: ModelSpec,
    space: PruningSpace,
    importance: Importance,
    nested: NestedLevels,
    info: dict[str, Any],
    *,
    trusted_factory: str | None = None,
) -> ElasticModel:
    """The elastic model of ``base`` (unchanged) with the widths of ``nested``, before any fine-tuning.

    The base weights are permuted into every group's keep-priority order and stored once;
    every level gets its own copy of the BatchNorm layers and the classifier. Each level's
    sub-network is checked to equal, bit for bit, the model :func:`materialize` prunes from
    ``base`` for the level's candidate; a one-line error says so if the model's channel
    coupling cannot be nested that way. ``trusted_factory`` as in :func:`prune_search.models.build_model`.
    """
    orders = channel_orders(space, importance, nested.candidates.strategy[0])
    layout = ChannelLayout(base, space, orders)
    stored = layout.permute({key: value.detach().cpu() for key, value in base.state_dict().items()})
    own = per_level_keys(base, space)
    shared = {key: value for key, value in stored.items() if key not in own}
    per_level = [{key: stored[key].clone() for key in own} for _ in range(len(nested))]
    levels, standalone = [], []
    for index, trial in enumerate(nested.trials):
        pruned, plan = materialize(base, space, importance, nested.candidates[index])
        standalone.append({key: value.detach().cpu() for key, value in pruned.state_dict().items()})
        keep = {name: int(k) for name, k in zip(space.names, nested.candidates.keep[index].tolist(), strict=True)}
        levels.append(
            Level(
                trial,
                keep,
                int(nested.macs[index]),
                int(nested.params[index]),
                int(nested.trial_macs[index]),
                int(nested.trial_params[index]),
                plan,
            )
        )
    model = ElasticModel(spec, space, orders, levels, shared, per_level, info, trusted_factory=trusted_factory)
    for index, expected in enumerate(standalone):
        state = model.level_state(index)
        wrong = [key for key in expected if key not in state or not torch.equal(state[key], expected[key])]
        if wrong or set(state) != set(expected):
            where = wrong[0] if wrong else "its state entries"
            raise PruneSearchError(
                f"level {index} of the nested layout differs from the pruned model in '{where}'; "
                f"{spec.describe()} couples channels in a way that cannot be stored nested"
            )
    return model
