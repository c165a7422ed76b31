"""Per-channel importance of every group, behind one interface, serialisable as JSON.

Criteria (``CRITERIA``): ``taylor`` (first-order Taylor, Molchanov et al.: for every
consumer of the group's channels, the gradient of the loss w.r.t. a per-sample gate on its
input channel, i.e. Σ over positions of activation × gradient; summed over consumers,
absolute value per sample, mean over samples: the estimated loss increase, in nats, of
removing that channel alone), ``l1`` / ``l2`` (norm of the filter rows of the group's
Conv/Linear members, summed; ``l1`` is Li et al.'s "independent" variant), ``l1_greedy``
(Li et al.'s greedy variant, criteria_l1_greedy.py), ``fpgm`` (filter redundancy by geometric
median, criteria_fpgm.py), ``hessian`` (OBD saliency with a per-sample empirical Fisher,
criteria_hessian.py), ``bn_scale`` (|γ| of the group's BatchNorm members, summed),
``interval_adjoint`` (interval-adjoint significance of fully-connected networks,
criteria_interval.py) and ``random`` (a seeded control).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.channels import Batches, filter_scores, to_root
from prune_search.evaluators.criteria_fpgm import fpgm
from prune_search.evaluators.criteria_hessian import hessian
from prune_search.evaluators.criteria_interval import interval_adjoint
from prune_search.evaluators.criteria_l1_greedy import REFERENCE_RATIO, l1_greedy
from prune_search.evaluators.gates import mean_gate_statistic
from prune_search.space import PruningSpace


@dataclass
class Importance:
    """Scores per group (float64 ``[n]``, finite, ≥ 0) computed by one criterion.

    ``dead`` lists groups whose raw scores were all zero or not finite (a dead layer): their
    non-finite entries became 0, and selection then falls back to channel order.
    """

    criterion: str
    scores: dict[str, Tensor]
    dead: list[str] = field(default_factory=list)

    def vectors(self, space: PruningSpace) -> list[Tensor]:
        """The score vectors in the space's group order, checked against its group sizes."""
        out = []
        for group in space.groups:
            if group.name not in self.scores:
                raise PruneSearchError(
                    f"importance has no scores for group '{group.name}'; recompute it for this model"
                )
            vector = self.scores[group.name]
            if vector.numel() != group.size:
                raise PruneSearchError(
                    f"importance of group '{group.name}' has {vector.numel()} scores, the group {group.size} channels"
                )
            out.append(vector)
        return out

    def to_json(self) -> str:
        return json.dumps(
            {"criterion": self.criterion, "dead": self.dead, "scores": {k: v.tolist() for k, v in self.scores.items()}}
        )

    @classmethod
    def from_json(cls, text: str) -> "Importance":
        data = json.loads(text)
        return sanitize(data["criterion"], {k: torch.tensor(v, dtype=torch.float64) for k, v in data["scores"].items()})


def sanitize(criterion: str, raw: dict[str, Tensor]) -> Importance:
    """Importance from raw scores: absolute values, non-finite entries → 0, dead groups listed."""
    scores, dead = {}, []
    for name, vector in raw.items():
        vector = vector.detach().to("cpu", torch.float64).abs()
        finite = torch.isfinite(vector)
        if not bool(finite.all()) or not bool((vector[finite] > 0).any()):
            dead.append(name)
        scores[name] = torch.where(finite, vector, torch.zeros_like(vector))
    return Importance(criterion, scores, dead)


def _taylor(model: nn.Module, space: PruningSpace, *, batches: Batches, device: torch.device, **_: object) -> dict:
    return mean_gate_statistic(model, space, batches, device, lambda g: g.abs().sum(0), "taylor")


def _weight_norm(p: int) -> Callable:
    def criterion(model: nn.Module, space: PruningSpace, **_: object) -> dict:
        return filter_scores(model, space, lambda w: w.flatten(1).to("cpu", torch.float64).norm(p=p, dim=1))

    return criterion


def _bn_scale(model: nn.Module, space: PruningSpace, **_: object) -> dict:
    modules = dict(model.named_modules())
    out = {}
    for group in space.groups:
        members = [m for m in group.members if isinstance(modules[m.module], nn.modules.batchnorm._BatchNorm)]
        if not members or any(modules[m.module].weight is None for m in members):
            raise PruneSearchError(
                f"criterion bn_scale needs an affine BatchNorm in every group; '{group.name}' has none"
            )
        out[group.name] = sum(
            to_root(group, m, modules[m.module].weight.detach().abs().to(torch.float64).cpu()) for m in members
        )
    return out


def _random(model: nn.Module, space: PruningSpace, seed: int = 0, **_: object) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {g.name: torch.rand(g.size, generator=generator, dtype=torch.float64) for g in space.groups}


CRITERIA: dict[str, Callable[..., dict]] = {
    "taylor": _taylor,
    "l1": _weight_norm(1),
    "l1_greedy": l1_greedy,
    "l2": _weight_norm(2),
    "fpgm": fpgm,
    "hessian": hessian,
    "bn_scale": _bn_scale,
    "interval_adjoint": interval_adjoint,
    "random": _random,
}
NEEDS_DATA = ("taylor", "hessian", "interval_adjoint")


def check_criterion(name: str) -> str:
    """``name`` when it names a criterion of :data:`CRITERIA`; else a one-line error listing them."""
    if name not in CRITERIA:
        raise PruneSearchError(f"unknown criterion '{name}'; criteria are {', '.join(CRITERIA)}")
    return name


def compute_importance(
    model: nn.Module,
    space: PruningSpace,
    criterion: str = "taylor",
    *,
    batches: Batches | None = None,
    max_batches: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
    reference_ratio: float = REFERENCE_RATIO,
) -> Importance:
    """Importance of every group of ``space`` in ``model`` by ``criterion``.

    ``batches`` (``(x [B, C, H, W], y [B])``, train split, no augmentation) feed the
    data-driven criteria; the first ``max_batches`` are used, in order, with the model in
    eval mode, so the result is deterministic and BN statistics are untouched.
    ``reference_ratio`` is the keep ratio ``l1_greedy`` assumes for earlier groups.
    """
    check_criterion(criterion)
    torch_device = torch.device(device)
    if criterion in NEEDS_DATA and batches is None:
        raise PruneSearchError(f"criterion '{criterion}' needs calibration batches from the train split")
    limited = (batch for _, batch in zip(range(max_batches), batches or [], strict=False))
    raw = CRITERIA[criterion](
        model.to(torch_device), space, batches=limited, device=torch_device, seed=seed, reference_ratio=reference_ratio
    )
    return sanitize(criterion, raw)
