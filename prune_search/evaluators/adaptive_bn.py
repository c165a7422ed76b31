"""Higher-fidelity evaluation: channel masks + BatchNorm recalibration (EagleEye's adaptive BN).

A candidate is applied as masks that zero the removed channels at the output of every
layer of their group, which makes the network compute what the physically pruned model
computes; BatchNorm running statistics are then re-estimated on a few train batches and the
candidate is scored by its val accuracy.
"""

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.importance import Importance
from prune_search.evaluators.selection import select_channels
from prune_search.space import CandidateBatch, PruningSpace

Batch = tuple[Tensor, Tensor]
METRICS = ("accuracy", "loss", "kl")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> None:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``batches``.

    Only BN layers run in train mode (dropout stays off); the model ends in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    for inputs, _ in batches:
        model(inputs.to(device))
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[Batch], device: torch.device) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` (eval mode) over ``batches``."""
    model.eval()
    correct = seen = 0
    for inputs, targets in batches:
        correct += int((model(inputs.to(device)).argmax(1) == targets.to(device)).sum())
        seen += targets.numel()
    return correct / max(seen, 1)


class AdaptiveBNEvaluator:
    """Accuracy, loss and KL of candidates on ``validation`` batches after BN recalibration on
    ``calibration`` train batches (``validation`` is the val split for the sensitivity scan and
    the re-ranking, a fixed train-split sample for the study's fitness table).

    One deep copy of ``model`` per call, whatever the number of candidates; ``model`` is
    never changed. Cost per candidate: ``len(calibration) + len(validation)`` forward passes.
    With ``recalibrate=False`` the masked model keeps the base model's BN statistics
    (``calibration`` is unused): the accuracy of pruning without any adaptation. With
    ``batch_statistics=True`` every scored batch is normalised by its own BN statistics
    (one forward pass per batch and candidate; ``calibration`` is unused).
    """

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        importance: Importance,
        calibration: Sequence[Batch],
        validation: Sequence[Batch],
        device: torch.device | str = "cpu",
        recalibrate: bool = True,
        batch_statistics: bool = False,
    ) -> None:
        norms = space.structure.pruned_norms()
        if norms:
            raise PruneSearchError(
                f"BN-recalibrated scores (proxies bn_kl/bn_loss, the sensitivity scan, --pick bn/kl) mask channels, "
                f"which changes the statistics of LayerNorm/GroupNorm '{norms[0]}' ({len(norms)} such layers); "
                "use --proxy taylor_loss and --pick trained for this model"
            )
        self.model = model
        self.space = space
        self.vectors = importance.vectors(space)
        self.calibration = calibration
        self.validation = validation
        self.device = torch.device(device)
        self.recalibrate = recalibrate
        self.batch_statistics = batch_statistics
        self._reference_logp: list[Tensor] | None = None

    def _masks(self, candidate: CandidateBatch, row: int, modules: dict[str, nn.Module]) -> dict[str, Tensor]:
        masks: dict[str, Tensor] = {}
        for g, (group, vector) in enumerate(zip(self.space.groups, self.vectors, strict=True)):
            strategy = self.space.strategies[int(candidate.strategy[row, g])]
            kept = torch.zeros(group.size, dtype=torch.bool)
            kept[select_channels(vector, strategy, int(candidate.keep[row, g]), group.blocks, group.aligned)] = True
            for member in group.members:
                if not member.out:
                    continue
                module = modules[member.module]
                width = module.weight.shape[0] if hasattr(module, "weight") else len(member.idxs)
                mask = masks.setdefault(member.module, torch.ones(width))
                removed = ~kept[torch.tensor(member.root_idxs)]
                mask[torch.tensor(member.idxs)[removed]] = 0.0
        return {name: mask.to(self.device) for name, mask in masks.items()}

    @torch.no_grad()
    def _reference(self, unpruned: nn.Module) -> list[Tensor]:
        """Log-probabilities ``[B, K]`` of the unpruned model on every validation batch (computed once)."""
        if self._reference_logp is None:
            unpruned.eval()
            self._reference_logp = [
                torch.log_softmax(unpruned(inputs.to(self.device)).double(), 1) for inputs, _ in self.validation
            ]
        return self._reference_logp

    def measure(self, candidates: CandidateBatch, on_step: Callable[[], object] | None = None) -> dict[str, Tensor]:
        """Per candidate ``[P]`` (float64) on the validation batches, after BN recalibration:
        ``accuracy`` in [0, 1], ``loss`` (mean cross-entropy, nats per sample) and ``kl``
        (mean KL(unpruned ‖ candidate) of the output distributions, nats per sample).
        ``on_step`` is called after each candidate."""
        self.space.validate(candidates)
        work = copy.deepcopy(self.model).to(self.device)
        reference = self._reference(work)
        modules = dict(work.named_modules())
        active: dict[str, Tensor] = {}

        def mask_output(name: str):
            def hook(module: nn.Module, _: tuple, output: Tensor) -> Tensor:
                mask = active.get(name)
                if mask is None:
                    return output
                if isinstance(module, nn.Linear):
                    return output * mask
                return output * mask.view(1, -1, *([1] * (output.dim() - 2)))

            return hook

        names = {m.module for g in self.space.groups for m in g.members if m.out}
        handles = [modules[name].register_forward_hook(mask_output(name)) for name in names]
        rows = []
        try:
            for row in range(len(candidates)):
                active.clear()
                active.update(self._masks(candidates, row, modules))
                if self.recalibrate and not self.batch_statistics:
                    recalibrate_bn(work, self.calibration, self.device)
                rows.append(batch_scores(work, self.validation, reference, self.device, self.batch_statistics))
                if on_step is not None:
                    on_step()
        finally:
            for handle in handles:
                handle.remove()
        columns = zip(*rows, strict=True) if rows else ([], [], [])
        return {
            key: torch.tensor(list(values), dtype=torch.float64) for key, values in zip(METRICS, columns, strict=True)
        }

    def __call__(self, candidates: CandidateBatch) -> Tensor:
        """Val accuracy per candidate ``[P]`` (float64, in [0, 1])."""
        return self.measure(candidates)["accuracy"]


@torch.no_grad()
def batch_scores(
    model: nn.Module,
    batches: Sequence[Batch],
    reference: Sequence[Tensor],
    device: torch.device,
    batch_statistics: bool,
) -> tuple[float, float, float]:
    """(accuracy, mean cross-entropy, mean KL(reference ‖ model)) of ``model`` over ``batches``: in eval
    mode, or with every BatchNorm normalising by the batch's own statistics (``batch_statistics``)."""
    model.eval()
    if batch_statistics:
        for norm in model.modules():
            if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                norm.train()
    correct = seen = 0
    loss = kl = 0.0
    for (inputs, targets), ref in zip(batches, reference, strict=True):
        logp = torch.log_softmax(model(inputs.to(device)).double(), 1)
        targets = targets.to(device)
        correct += int((logp.argmax(1) == targets).sum())
        seen += targets.numel()
        loss += float(torch.nn.functional.nll_loss(logp, targets, reduction="sum"))
        kl += float((ref.exp() * (ref - logp)).sum())
    seen = max(seen, 1)
    return correct / seen, loss / seen, kl / seen
