"""One model holding several nested widths, switched at run time with ``set_width``.

What is stored (all tensors in the stored channel order of :mod:`prune_search.elastic.layout`):

- ``shared``: one full-width copy of every Conv/Linear weight and bias except the
  classifier's. Level ℓ uses the entries of its channels, which contain every smaller
  level's entries (a prefix of every permuted dimension), and per-level fine-tuning never
  changes an entry a smaller level uses.
- ``per_level[ℓ]``: level ℓ's own copy of every BatchNorm layer (affine and running
  statistics) and of the classifier (weight and bias), full width, of which the level uses
  its channels. Their values cannot be shared: the core channels' activations change when a
  level adds input channels, and the classifier reads all of a level's features.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from prune_search.elastic.layout import ChannelLayout, LevelIndex, State
from prune_search.errors import PruneSearchError
from prune_search.evaluators import PruningPlan, apply_plan
from prune_search.models import ModelSpec, build_model
from prune_search.space import PruningSpace
from prune_search.space.structure import CONV, LINEAR


@dataclass
class Level:
    """One width: the trial it comes from, its nested keep counts (root channels per group),
    exact MACs/params per sample (and the trial's own), the torch-pruning plan that builds its
    architecture from the base model, and metrics (accuracies in [0, 1])."""

    trial: int
    keep: dict[str, int]
    macs: int
    params: int
    trial_macs: int
    trial_params: int
    plan: PruningPlan
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "keep": dict(self.keep),
            "macs": self.macs,
            "params": self.params,
            "trial_macs": self.trial_macs,
            "trial_params": self.trial_params,
            "plan": self.plan.to_json(),
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Level":
        return cls(
            int(data["trial"]),
            {str(k): int(v) for k, v in data["keep"].items()},
            int(data["macs"]),
            int(data["params"]),
            int(data["trial_macs"]),
            int(data["trial_params"]),
            PruningPlan.from_json(data["plan"]),
            {str(k): float(v) for k, v in data["metrics"].items()},
        )


def per_level_keys(model: nn.Module, space: PruningSpace) -> list[str]:
    """State entries every level stores its own copy of: BatchNorm layers and the classifier."""
    costed = [layer.name for layer in space.structure.layers if layer.kind in (CONV, LINEAR)]
    classifier = costed[-1]
    owners = [
        name
        for name, module in model.named_modules()
        if name == classifier or isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    return [key for key in model.state_dict() if key.rpartition(".")[0] in owners]


class ElasticModel(nn.Module):
    """Nested sub-networks of one base model; ``forward`` runs the active one.

    Levels are numbered from 0 (smallest) to ``len(levels) - 1``. The active sub-network
    (``self.net``) maps ``[B, C, H, W]`` images to ``[B, K]`` logits and is exactly the model
    ``materialize`` builds for the level's candidate (same layers, same channel order), with
    the level's stored weights. Switching width reloads the stored weights, so changes made to
    ``self.net`` are discarded unless written back with :meth:`store_level`.
    """

    def __init__(
        self,
        spec: ModelSpec,
        space: PruningSpace,
        orders: dict[str, Tensor],
        levels: list[Level],
        shared: State,
        per_level: list[State],
        info: dict[str, Any],
        *,
        trusted_factory: str | None = None,
    ) -> None:
        super().__init__()
        self._trusted_factory = trusted_factory
        template = self._template(spec)
        self.spec, self.space, self.info = spec, space, info
        self.layout = ChannelLayout(template, space, orders)
        own = per_level_keys(template, space)
        full = template.state_dict()
        expected_shared = [key for key in full if key not in own]
        if sorted(shared) != sorted(expected_shared) or any(sorted(s) != sorted(own) for s in per_level):
            raise PruneSearchError(f"the stored weights do not fit {spec.describe()}; rebuild the elastic checkpoint")
        for key, tensor in [*shared.items(), *(item for state in per_level for item in state.items())]:
            if tensor.shape != full[key].shape:
                raise PruneSearchError(
                    f"stored weight '{key}' has shape {list(tensor.shape)}, {spec.describe()} needs "
                    f"{list(full[key].shape)}; rebuild the elastic checkpoint"
                )
        if len(levels) < 2 or len(per_level) != len(levels):
            raise PruneSearchError("an elastic checkpoint needs at least 2 levels, each with its own weights")
        self._levels = levels
        self._shared = shared
        self._per_level = per_level
        self._own = set(own)
        self._keys = list(full)
        self._index: list[LevelIndex] = [self.layout.level_index(level.keep) for level in levels]
        self._nets: dict[int, nn.Module] = {}
        self._active = -1
        self.net = template
        self.set_width(len(levels) - 1)

    @property
    def levels(self) -> list[Level]:
        """The widths, smallest first."""
        return list(self._levels)

    @property
    def level(self) -> int:
        """The active level."""
        return self._active

    def _check(self, level: int) -> None:
        if not isinstance(level, int) or not 0 <= level < len(self._levels):
            raise PruneSearchError(f"level {level} does not exist; levels are 0..{len(self._levels) - 1}")

    def level_state(self, level: int) -> State:
        """The state_dict of level ``level``'s sub-network (CPU tensors, copies)."""
        self._check(level)
        own = self._per_level[level]
        return {
            key: self.layout.gather(key, own[key] if key in self._own else self._shared[key], self._index[level])
            for key in self._keys
        }

    def architecture(self, level: int) -> nn.Module:
        """A fresh sub-network of level ``level`` with untrained weights (CPU)."""
        self._check(level)
        return apply_plan(self._template(self.spec), self._levels[level].plan)

    def sub_network(self, level: int) -> nn.Module:
        """An independent copy of level ``level``'s sub-network with its stored weights (CPU, eval mode)."""
        net = self.architecture(level)
        net.load_state_dict(self.level_state(level))
        return net.eval()

    def set_width(self, level: int) -> "ElasticModel":
        """Make level ``level`` the active sub-network, with its stored weights; returns ``self``."""
        self._check(level)
        device = next(self.net.parameters()).device
        if level not in self._nets:
            self._nets[level] = self.architecture(level)
        net = self._nets[level].to(device)
        net.load_state_dict(self.level_state(level))
        net.train(self.training)
        self.net = net
        self._active = level
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, K]`` of the active level for images ``[B, C, H, W]``."""
        return self.net(x)

    def store_level(self, level: int, state: State) -> None:
        """Write a trained sub-network's ``state`` back as level ``level``'s weights.

        The entries level ``level`` shares with level ``level - 1`` must be unchanged (they
        belong to every smaller level); a ``ValueError`` names the first that changed.
        """
        self._check(level)
        current = self.level_state(level)
        if sorted(state) != sorted(current):
            raise ValueError(f"the state does not belong to level {level}'s sub-network")
        index = self._index[level]
        for key, value in state.items():
            value = value.detach().cpu()
            if key in self._own:
                self.layout.scatter(key, self._per_level[level][key], value, index)
                continue
            if level > 0:
                core = self.layout.core_mask(key, value.shape, index, self._index[level - 1])
                if not torch.equal(value[core], current[key][core]):
                    raise ValueError(f"'{key}' changed entries that level {level - 1} uses")
            self.layout.scatter(key, self._shared[key], value, index)
        if level == self._active:
            self.set_width(level)

    def core_mask(self, level: int, key: str, shape: torch.Size) -> Tensor:
        """Bool ``shape``: True where entry ``key`` of level ``level`` is also used by level ``level - 1``
        (all False for level 0 and for the per-level entries, which no other level uses)."""
        self._check(level)
        if key in self._own or level == 0:
            return torch.zeros(shape, dtype=torch.bool)
        return self.layout.core_mask(key, shape, self._index[level], self._index[level - 1])

    def inherit(self, level: int, source: int) -> None:
        """Start level ``level``'s own copies (BatchNorm, classifier) from level ``source``'s."""
        self._check(level)
        self._check(source)
        self._per_level[level] = {key: value.clone() for key, value in self._per_level[source].items()}
        if level == self._active:
            self.set_width(level)

    def payload(self) -> dict[str, Any]:
        """Plain data and tensors only: what the checkpoint file holds."""
        return {
            "model": self.spec.to_dict(),
            "space": self.space.to_json(),
            "orders": dict(self.layout.orders),
            "levels": [level.to_dict() for level in self._levels],
            "shared": self._shared,
            "per_level": self._per_level,
            "info": self.info,
        }

    def _template(self, spec: ModelSpec) -> nn.Module:
        """A fresh base architecture for ``spec`` (a stored factory only if it is the trusted one)."""
        return build_model(spec, trusted_factory=self._trusted_factory, source="the elastic checkpoint")

    @classmethod
    def from_payload(cls, payload: dict[str, Any], *, trusted_factory: str | None = None) -> "ElasticModel":
        """The model stored as ``payload``; ``trusted_factory`` as in :func:`prune_search.models.build_model`."""
        return cls(
            ModelSpec.from_dict(payload["model"]),
            PruningSpace.from_json(payload["space"]),
            payload["orders"],
            [Level.from_dict(level) for level in payload["levels"]],
            payload["shared"],
            payload["per_level"],
            payload["info"],
            trusted_factory=trusted_factory,
        )
