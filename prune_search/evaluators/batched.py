"""The second fidelity: whole candidates scored after BatchNorm re-estimation on the scored batch.

Two ways give the same scores (a test checks it), chosen by ``mode``:

- ``masked`` (the default off the CPU): ``chunk`` candidates share one forward pass. The scored
  batch ``[B, ...]`` is repeated along the batch axis (``[chunk·B, ...]``), each candidate's
  channel masks zero its removed channels at the outputs of its groups' members, and every
  BatchNorm normalises each candidate's slice of the batch by that slice's own mean and
  variance. On a GPU the chunk fills the device.
- ``physical`` (the default on the CPU, where it is faster: a pruned network costs a fraction
  of the unpruned one): each candidate is pruned with :func:`materialize` and run with its
  BatchNorms normalising by the batch's own statistics.

Either way interactions between groups are seen, unlike the one-group-at-a-time fitness table.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.adaptive_bn import METRICS, batch_scores
from prune_search.evaluators.importance import Importance
from prune_search.evaluators.materialize import materialize
from prune_search.evaluators.selection import select_channels
from prune_search.space import CandidateBatch, PruningSpace

Batch = tuple[Tensor, Tensor]
SCORES = METRICS
MODES = ("auto", "masked", "physical")


class BatchedEvaluator:
    """Accuracy, cross-entropy and KL(unpruned ‖ candidate) of candidates on ``batches``.

    ``model`` (eval mode, on ``device``) is never changed: hooks are added for a call and
    removed after it. ``batches`` should be a fixed TRAIN-split sample when the scores feed the
    search. Returns per candidate ``[P]`` float64: ``accuracy`` in [0, 1]; ``loss`` and ``kl``
    in nats per sample. ``mode``: ``auto`` (``physical`` on the CPU or when a group prunes a
    LayerNorm/GroupNorm, whose statistics a mask would change; ``masked`` elsewhere),
    ``masked`` or ``physical``.
    """

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        importance: Importance,
        batches: Sequence[Batch],
        device: torch.device | str = "cpu",
        chunk: int = 8,
        mode: str = "auto",
    ) -> None:
        if mode not in MODES:
            raise PruneSearchError(f"unknown evaluator mode '{mode}'; modes are {', '.join(MODES)}")
        self.model = model
        self.importance = importance
        self.space = space
        self.vectors = importance.vectors(space)
        self.device = torch.device(device)
        self.batches = [(inputs.to(self.device), targets.to(self.device)) for inputs, targets in batches]
        self.chunk = chunk
        norms = space.structure.pruned_norms()
        if mode == "masked" and norms:
            raise PruneSearchError(
                f"masked evaluation changes the statistics of LayerNorm/GroupNorm '{norms[0]}' ({len(norms)} such "
                "layers); use mode 'physical' for this model"
            )
        physical = self.device.type == "cpu" or bool(norms)
        self.mode = mode if mode != "auto" else ("physical" if physical else "masked")
        modules = dict(model.named_modules())
        self._masked = sorted({m.module for g in space.groups for m in g.members if m.out})
        self._norms = [name for name, m in modules.items() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._widths = {name: _out_width(modules[name]) for name in self._masked}
        with torch.no_grad():
            model.eval()
            self._reference = [torch.log_softmax(model(inputs).double(), 1) for inputs, _ in self.batches]

    def masks(self, candidates: CandidateBatch) -> dict[str, Tensor]:
        """Per masked module, ``[P, width]`` float masks (1 kept, 0 removed) of every candidate."""
        masks = {name: torch.ones(len(candidates), width) for name, width in self._widths.items()}
        for row in range(len(candidates)):
            for g, (group, vector) in enumerate(zip(self.space.groups, self.vectors, strict=True)):
                count = int(candidates.keep[row, g])
                if count == group.size:
                    continue
                kept = torch.zeros(group.size, dtype=torch.bool)
                strategy = self.space.strategies[int(candidates.strategy[row, g])]
                kept[select_channels(vector, strategy, count, group.blocks, group.aligned)] = True
                for member in group.members:
                    if member.out:
                        removed = ~kept[torch.tensor(member.root_idxs)]
                        masks[member.module][row, torch.tensor(member.idxs)[removed]] = 0.0
        return {name: mask.to(self.device) for name, mask in masks.items()}

    def __call__(self, candidates: CandidateBatch) -> dict[str, Tensor]:
        """Scores of every candidate ``{name: [P]}`` (see :data:`SCORES`)."""
        self.space.validate(candidates)
        score = self._chunk if self.mode == "masked" else self._physical
        parts = [score(candidates[start : start + self.chunk]) for start in range(0, len(candidates), self.chunk)]
        return {name: torch.cat([part[name] for part in parts]) if parts else torch.zeros(0) for name in SCORES}

    @torch.no_grad()
    def _chunk(self, candidates: CandidateBatch) -> dict[str, Tensor]:
        count = len(candidates)
        masks = self.masks(candidates)
        modules = dict(self.model.named_modules())
        handles = [modules[name].register_forward_hook(_norm_hook(count, masks.get(name))) for name in self._norms]
        handles += [
            modules[name].register_forward_hook(_mask_hook(count, masks[name]))
            for name in self._masked
            if name not in self._norms
        ]
        correct = torch.zeros(count, dtype=torch.float64, device=self.device)
        loss, kl = torch.zeros_like(correct), torch.zeros_like(correct)
        seen = 0
        try:
            self.model.eval()
            for (inputs, targets), reference in zip(self.batches, self._reference, strict=True):
                repeated = inputs.repeat(count, *([1] * (inputs.dim() - 1)))
                logp = torch.log_softmax(self.model(repeated).double(), 1).view(count, len(targets), -1)
                correct += (logp.argmax(2) == targets[None]).sum(1)
                loss -= logp.gather(2, targets[None, :, None].expand(count, -1, 1)).sum((1, 2))
                kl += (reference.exp()[None] * (reference[None] - logp)).sum((1, 2))
                seen += len(targets)
        finally:
            for handle in handles:
                handle.remove()
        return {"accuracy": (correct / seen).cpu(), "loss": (loss / seen).cpu(), "kl": (kl / seen).cpu()}

    def _physical(self, candidates: CandidateBatch) -> dict[str, Tensor]:
        rows = []
        for row in range(len(candidates)):
            pruned, _ = materialize(self.model, self.space, self.importance, candidates[row : row + 1])
            rows.append(batch_scores(pruned, self.batches, self._reference, self.device, batch_statistics=True))
        return {name: torch.tensor([r[i] for r in rows], dtype=torch.float64) for i, name in enumerate(SCORES)}


def _out_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    return module.num_features


def _mask_hook(count: int, mask: Tensor):
    """Multiplies each candidate's slice of the output ``[count·B, C, ...]`` by its mask ``[count, C]``."""

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor:
        shaped = output.view(count, -1, *output.shape[1:])
        return (shaped * mask.view(count, 1, -1, *([1] * (output.dim() - 2)))).view_as(output)

    return hook


def _norm_hook(count: int, mask: Tensor | None):
    """Replaces a BatchNorm's output by per-candidate batch normalisation of its input (then the mask)."""

    def hook(module: nn.modules.batchnorm._BatchNorm, inputs: tuple, output: Tensor) -> Tensor:
        x = inputs[0].view(count, -1, *inputs[0].shape[1:])
        dims = [1, *range(3, x.dim())]
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, keepdim=True, unbiased=False)
        shape = (1, 1, -1, *([1] * (x.dim() - 3)))
        y = (x - mean) / torch.sqrt(var + module.eps)
        if module.affine:
            y = y * module.weight.view(shape) + module.bias.view(shape)
        if mask is not None:
            y = y * mask.view(count, 1, -1, *([1] * (x.dim() - 3)))
        return y.reshape_as(output)

    return hook
