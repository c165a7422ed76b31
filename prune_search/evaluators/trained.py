"""A fidelity that does not saturate: whole candidates scored after a short KD fine-tune.

At deep pruning (−80 % MACs) every pruned network is near chance before training, even with its
BatchNorm re-estimated, so untrained scores (the fitness table, :class:`BatchedEvaluator`) are flat
there. A few hundred steps of knowledge distillation separate the candidates the way the full
fine-tune will. Each candidate is pruned physically (:func:`materialize`, the finalizer's channel
choice), trained for ``steps`` SGD steps (Nesterov momentum 0.9, weight decay 5e-4, cosine from
``lr`` to 0) on a fixed TRAIN-split pool with the finalizer's loss (α·T²·KL to the unpruned model +
(1 − α)·CE; the unpruned model's logits are computed once), then scored in eval mode on a held-out
part of the train split. Val and test never feed it.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_search.evaluators.importance import Importance
from prune_search.evaluators.materialize import materialize
from prune_search.space import CandidateBatch, PruningSpace

Batch = tuple[Tensor, Tensor]
SCORES = ("accuracy", "loss", "kl")


class TrainedEvaluator:
    """Accuracy, cross-entropy and KL(unpruned ‖ candidate) of candidates after ``steps`` KD steps.

    ``train`` are the batches ``[B, ...]`` / ``[B]`` trained on (cycled, in order, ``steps`` times in all);
    ``held_out`` the batches scored; both from the train split, disjoint. ``model`` (the unpruned network)
    is never changed. Every candidate is trained from the same seed, so a score depends on the candidate
    only. Returns per candidate ``[P]`` float64: ``accuracy`` in [0, 1]; ``loss`` and ``kl`` in nats per
    sample.
    """

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        importance: Importance,
        train: Sequence[Batch],
        held_out: Sequence[Batch],
        device: torch.device | str = "cpu",
        *,
        steps: int = 200,
        lr: float = 0.01,
        temperature: float = 4.0,
        alpha: float = 0.9,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.space = space
        self.importance = importance
        self.device = torch.device(device)
        self.steps, self.lr, self.temperature, self.alpha, self.seed = steps, lr, temperature, alpha, seed
        with torch.no_grad():
            model.eval()
            self.train = [(x.to(self.device), y.to(self.device), model(x.to(self.device)).float()) for x, y in train]
            self.held_out = [
                (x.to(self.device), y.to(self.device), torch.log_softmax(model(x.to(self.device)).double(), 1))
                for x, y in held_out
            ]

    def _fit(self, net: nn.Module, steps: int) -> None:
        torch.manual_seed(self.seed)
        optimizer = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        T = self.temperature
        net.train()
        for step in range(steps):
            inputs, targets, teacher = self.train[step % len(self.train)]
            logits = net(inputs)
            distill = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(teacher / T, 1), reduction="batchmean")
            loss = self.alpha * T**2 * distill + (1 - self.alpha) * F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

    @torch.no_grad()
    def _score(self, net: nn.Module) -> tuple[float, float, float]:
        net.eval()
        correct = seen = 0
        loss = kl = 0.0
        for inputs, targets, reference in self.held_out:
            logp = torch.log_softmax(net(inputs).double(), 1)
            correct += int((logp.argmax(1) == targets).sum())
            seen += targets.numel()
            loss += float(F.nll_loss(logp, targets, reduction="sum"))
            kl += float((reference.exp() * (reference - logp)).sum())
        seen = max(seen, 1)
        return correct / seen, loss / seen, kl / seen

    def __call__(self, candidates: CandidateBatch, steps: int | None = None) -> dict[str, Tensor]:
        """Scores of every candidate ``{name: [P]}`` (see :data:`SCORES`) after ``steps`` KD steps (default: the
        evaluator's ``steps``)."""
        self.space.validate(candidates)
        steps = self.steps if steps is None else steps
        rows = []
        for row in range(len(candidates)):
            net, _ = materialize(self.model, self.space, self.importance, candidates[row : row + 1])
            self._fit(net.to(self.device), steps)
            rows.append(self._score(net))
        return {name: torch.tensor([r[i] for r in rows], dtype=torch.float64) for i, name in enumerate(SCORES)}
