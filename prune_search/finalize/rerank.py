"""Re-ranking the front trials within a budget by val accuracy after BN recalibration.

The proxy is computed once on the unpruned model; EagleEye's adaptive BN looks at each
candidate itself (masks applied, BatchNorm statistics re-estimated on train batches, no
training). On Fashion-MNIST (``benchmarks/results/fmnist_quality.md``) the re-ranked pick
fine-tuned as well as or better than the best-proxy pick at every measured budget, so
``finalize --max-macs/--max-params`` uses it by default.
"""

from typing import Any

import torch
from torch import nn

from prune_search.data import DatasetBundle
from prune_search.evaluators import AdaptiveBNEvaluator, BatchedEvaluator
from prune_search.search.codec import CandidateCodec
from prune_search.search.study import StudyHandle, fitness_batches

RERANKED = 16  # front trials with the most MACs within the budget that are re-ranked
CALIBRATION_BATCHES = 8  # train batches of 128 re-estimating the BN statistics
VAL_BATCHES = 4  # val batches of 128 scoring each candidate


def bn_rerank(
    handle: StudyHandle, fitting: list[dict[str, Any]], model: nn.Module, bundle: DatasetBundle, device: torch.device
) -> tuple[dict[str, Any], float]:
    """Of the :data:`RERANKED` rows of ``fitting`` with the most MACs, the best by BN-recalibrated val accuracy.

    ``model`` is the study's base model (unchanged); returns the row and its accuracy in [0, 1].
    """
    nearest = sorted(fitting, key=lambda r: -r["macs"])[:RERANKED]
    batch = CandidateCodec(handle.space).from_rows(nearest)
    calibration = [b for _, b in zip(range(CALIBRATION_BATCHES), bundle.loader("train", 128), strict=False)]
    validation = [b for _, b in zip(range(VAL_BATCHES), bundle.loader("val", 128), strict=False)]
    evaluator = AdaptiveBNEvaluator(model, handle.space, handle.importance, calibration, validation, device)
    scores = evaluator(batch)
    best = int(scores.argmax())
    return nearest[best], float(scores[best])


def kl_rerank(
    handle: StudyHandle, fitting: list[dict[str, Any]], model: nn.Module, bundle: DatasetBundle, device: torch.device
) -> tuple[dict[str, Any], float]:
    """Of the :data:`RERANKED` rows of ``fitting`` with the most MACs, the one whose whole network is closest
    to the unpruned model: least KL (nats per sample) with BN re-estimated, on the study's train-split fitness
    sample (:class:`BatchedEvaluator`; val is not used). Returns the row and its KL."""
    nearest = sorted(fitting, key=lambda r: -r["macs"])[:RERANKED]
    batch = CandidateCodec(handle.space).from_rows(nearest)
    evaluator = BatchedEvaluator(model, handle.space, handle.importance, fitness_batches(bundle), device)
    scores = evaluator(batch)["kl"]
    best = int(scores.argmin())
    return nearest[best], float(scores[best])
