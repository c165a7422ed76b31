"""Per-channel importance of every group, behind one interface, serialisable as JSON.

Criteria (``CRITERIA``): ``taylor`` (first-order Taylor, Molchanov et al.: for every
consumer of the group's channels, the gradient of the loss w.r.t. a per-sample gate on its
input channel, i.e. Σ over positions of activation × gradient; summed over consumers,
absolute value per sample, mean over samples: the estimated loss increase, in nats, of
removing that channel alone), ``l1`` / ``l2`` (norm of the filter rows of the group's
Conv/Linear members, summed), ``bn_scale`` (|γ| of the group's BatchNorm members, summed)
and ``random`` (a seeded control).
"""

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.space import PruningSpace
from prune_search.space.structure import Group, Member

Batches = Iterable[tuple[Tensor, Tensor]]


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


def _to_root(group: Group, member: Member, values: Tensor) -> Tensor:
    """Sum a member's per-channel ``values`` (``[..., C_layer]``) onto root channels ``[..., n]``."""
    picked = values[..., member.idxs]
    out = torch.zeros(*values.shape[:-1], group.size, dtype=values.dtype, device=values.device)
    return out.index_add_(-1, torch.tensor(member.root_idxs, device=values.device), picked)


def _taylor(model: nn.Module, space: PruningSpace, batches: Batches, device: torch.device, **_: object) -> dict:
    modules = dict(model.named_modules())
    consumers = {m.module for g in space.groups for m in g.members if not m.out}
    gates: dict[str, Tensor] = {}

    def gate_input(name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            channels = x.shape[1] if isinstance(module, nn.modules.conv._ConvNd) else x.shape[-1]
            gate = torch.ones(x.shape[0], channels, device=x.device, dtype=x.dtype, requires_grad=True)
            gates[name] = gate
            if isinstance(module, nn.modules.conv._ConvNd):
                shaped = gate.view(x.shape[0], channels, *([1] * (x.dim() - 2)))
            else:
                shaped = gate.view(x.shape[0], *([1] * (x.dim() - 2)), channels)
            return (x * shaped, *args[1:])

        return hook

    handles = [modules[name].register_forward_pre_hook(gate_input(name)) for name in consumers]
    totals = [torch.zeros(g.size, dtype=torch.float64, device=device) for g in space.groups]
    samples = 0
    was_training = model.training
    model.eval()
    try:
        for inputs, targets in batches:
            gates.clear()
            inputs, targets = inputs.to(device), targets.to(device)
            loss = F.cross_entropy(model(inputs), targets, reduction="sum")
            names = list(gates)
            grads = dict(zip(names, torch.autograd.grad(loss, [gates[n] for n in names]), strict=True))
            for total, group in zip(totals, space.groups, strict=True):
                per_sample = sum(
                    _to_root(group, m, grads[m.module].to(torch.float64)) for m in group.members if not m.out
                )
                total += per_sample.abs().sum(0)
            samples += targets.numel()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if samples == 0:
        raise PruneSearchError("Taylor importance needs at least one calibration batch")
    return {g.name: total / samples for g, total in zip(space.groups, totals, strict=True)}


def _weight_norm(p: int) -> Callable:
    def criterion(model: nn.Module, space: PruningSpace, **_: object) -> dict:
        modules = dict(model.named_modules())
        out = {}
        for group in space.groups:
            score = torch.zeros(group.size, dtype=torch.float64)
            for member in group.members:
                module = modules[member.module]
                if member.out and isinstance(module, nn.modules.conv._ConvNd | nn.Linear):
                    rows = module.weight.detach().flatten(1).to(torch.float64).norm(p=p, dim=1).cpu()
                    score += _to_root(group, member, rows)
            out[group.name] = score
        return out

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
            _to_root(group, m, modules[m.module].weight.detach().abs().to(torch.float64).cpu()) for m in members
        )
    return out


def _random(model: nn.Module, space: PruningSpace, seed: int = 0, **_: object) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {g.name: torch.rand(g.size, generator=generator, dtype=torch.float64) for g in space.groups}


CRITERIA: dict[str, Callable[..., dict]] = {
    "taylor": _taylor,
    "l1": _weight_norm(1),
    "l2": _weight_norm(2),
    "bn_scale": _bn_scale,
    "random": _random,
}
NEEDS_DATA = ("taylor",)


def compute_importance(
    model: nn.Module,
    space: PruningSpace,
    criterion: str = "taylor",
    *,
    batches: Batches | None = None,
    max_batches: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Importance:
    """Importance of every group of ``space`` in ``model`` by ``criterion``.

    ``batches`` (``(x [B, C, H, W], y [B])``, train split, no augmentation) feed the
    data-driven criteria; the first ``max_batches`` are used, in order, with the model in
    eval mode, so the result is deterministic and BN statistics are untouched.
    """
    if criterion not in CRITERIA:
        raise PruneSearchError(f"unknown criterion '{criterion}'; criteria are {', '.join(CRITERIA)}")
    torch_device = torch.device(device)
    if criterion in NEEDS_DATA and batches is None:
        raise PruneSearchError(f"criterion '{criterion}' needs calibration batches from the train split")
    limited = (batch for _, batch in zip(range(max_batches), batches or [], strict=False))
    raw = CRITERIA[criterion](model.to(torch_device), space, batches=limited, device=torch_device, seed=seed)
    return sanitize(criterion, raw)
