"""Does a proxy rank candidates the way fine-tuning does? Rank correlation within MACs bands.

In each narrow band of MACs (a reduction ``c`` of the base model's MACs, ± ``width / 2``)
``per_band`` of the study's trials are drawn at random (seeded), each is fine-tuned with the
same brief recipe, and every predictor is compared with the fine-tuned val accuracy:

- ``taylor_loss``, ``retained_fraction``: the study's training-free proxies (lower = better);
- ``bn_kl``, ``bn_loss``: the measured fitness table's sums, in a study that has one;
- ``corrected``: the fast fitness corrected by the surrogate fitted on the study's measured
  candidates (multi-fidelity study, :mod:`prune_search.search.fidelity`);
- ``whole_kl``: KL(unpruned ‖ candidate) of the whole candidate with BN statistics re-estimated,
  on the study's train-split fitness sample (the batched second fidelity, :class:`BatchedEvaluator`);
- ``trained_kl``: KL(unpruned ‖ candidate) on held-out train images after a short KD fine-tune of
  the middle rung's length (:data:`~prune_search.finalize.rerank.TRAINED_RUNGS`), the trained pick's
  fidelity (:class:`TrainedEvaluator`);
- ``bn_accuracy``: val accuracy after BN recalibration (EagleEye), no training;
- ``params``: more parameters predict more accuracy (a control);
- ``uniformity``: spread of the keep ratios; a uniform candidate predicts more (a control).

Within a band, MACs are nearly equal, so a predictor earns its correlation only by telling
good channel allocations from bad ones.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from prune_search.errors import PruneSearchError
from prune_search.evaluators import AdaptiveBNEvaluator, BatchedEvaluator, CostModel
from prune_search.evaluators.trained import TrainedEvaluator
from prune_search.evidence.context import Bench
from prune_search.finalize.rerank import TRAINED_RUNGS, trained_batches
from prune_search.finalize.tune import FinalizeConfig
from prune_search.search.fidelity import features, study_surrogate
from prune_search.search.runner import Scorer
from prune_search.search.study import fitness_batches
from prune_search.search.summary import load_archive

TOP = 5


@dataclass(frozen=True)
class ValidationConfig:
    """Bands as MACs reductions in (0, 1), their full width as a fraction of the base MACs."""

    bands: tuple[float, ...] = (0.5, 0.65, 0.8)
    width: float = 0.04
    per_band: int = 10
    bn_batches: int = 8
    val_batches: int = 4
    seed: int = 0

    def validate(self) -> None:
        if not self.bands or any(not 0 < b < 1 for b in self.bands):
            raise PruneSearchError("--bands must be MACs reductions between 0 and 1, e.g. 0.5,0.65,0.8")
        if not 0 < self.width < 1:
            raise PruneSearchError(f"--band-width must be in (0, 1), got {self.width}")
        if self.per_band < 3:
            raise PruneSearchError(f"--per-band must be at least 3 to rank anything, got {self.per_band}")
        if self.bn_batches < 1 or self.val_batches < 1:
            raise PruneSearchError("--bn-batches and --val-batches must be at least 1")


def sample_bands(base: Bench, config: ValidationConfig) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Per band: trial numbers ``[K]`` and genes ``[K, 2G]`` drawn without replacement (feasible trials)."""
    archive = load_archive(base.handle)
    _, macs, _ = Scorer(base.handle, torch.device("cpu")).measure(archive.X)
    reduction = 1 - macs / base.handle.config["base"]["macs"]
    rng = np.random.default_rng(config.seed)
    out = {}
    for band in config.bands:
        inside = np.flatnonzero((np.abs(reduction - band) <= config.width / 2) & (archive.violation <= 0))
        smallest_macs = float(CostModel(base.handle.space)(base.handle.space.smallest())[0][0])
        reachable = 1 - smallest_macs / base.handle.config["base"]["macs"]
        if band - config.width / 2 > reachable:
            raise PruneSearchError(
                f"a {band:.0%} MACs reduction is out of the space's reach (its smallest candidate cuts "
                f"{reachable:.0%}); choose --bands below that, or create the study with a lower --min-ratio"
            )
        if len(inside) < config.per_band:
            raise PruneSearchError(
                f"only {len(inside)} trials lie within {config.width / 2:.0%} of a {band:.0%} MACs reduction "
                f"(need --per-band {config.per_band}); widen --band-width or run the study longer"
            )
        chosen = np.sort(rng.choice(inside, config.per_band, replace=False))
        out[band] = (archive.numbers[chosen], archive.X[chosen])
    return out


def predictors(base: Bench, genes: np.ndarray, config: ValidationConfig) -> dict[str, np.ndarray]:
    """Every predictor ``[K]`` for the individuals ``genes``, oriented so that higher predicts better."""
    handle = base.handle
    scorer = Scorer(handle, torch.device("cpu"))
    proxies, _, params = scorer.measure(genes)
    batch = scorer.codec.batch(genes)
    calibration = _batches(base, "train", config.bn_batches)
    validation = _batches(base, "val", config.val_batches)
    bn = AdaptiveBNEvaluator(base.model, handle.space, handle.importance, calibration, validation, base.device)
    ratios = batch.keep.to(torch.float64) / handle.space.sizes.to(torch.float64)
    whole = BatchedEvaluator(base.model, handle.space, handle.importance, fitness_batches(base.bundle), base.device)
    trained = TrainedEvaluator(base.model, handle.space, handle.importance, *trained_batches(base.bundle), base.device)
    surrogate = study_surrogate(handle, load_archive(handle))
    corrected = {}
    if surrogate is not None:
        fast = proxies[handle.config["proxy"]]
        corrected["corrected"] = -surrogate(features(scorer.codec, genes, fast), fast)
    return {
        **{name: -values for name, values in proxies.items()},
        **corrected,
        "whole_kl": -whole(batch)["kl"].numpy(),
        "trained_kl": -trained(batch, TRAINED_RUNGS[len(TRAINED_RUNGS) // 2])["kl"].numpy(),
        "bn_accuracy": bn(batch).numpy(),
        "params": params.astype(np.float64),
        "uniformity": -ratios.std(1).numpy(),
    }


def _batches(base: Bench, split: str, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = base.bundle.loader(split, 128)
    return [batch for _, batch in zip(range(count), loader, strict=False)]


def correlations(scores: dict[str, np.ndarray], accuracy: np.ndarray) -> dict[str, dict[str, float | bool]]:
    """Spearman ρ, Kendall τ of each predictor with ``accuracy`` ``[K]``, and whether the best is in its top 5."""
    best = int(np.argmax(accuracy))
    out: dict[str, dict[str, float | bool]] = {}
    for name, values in scores.items():
        constant = bool(np.all(values == values[0]))
        rho = float("nan") if constant else float(stats.spearmanr(values, accuracy).statistic)
        tau = float("nan") if constant else float(stats.kendalltau(values, accuracy).statistic)
        top = np.argsort(-values, kind="stable")[:TOP]
        out[name] = {"spearman": rho, "kendall": tau, "best_in_top5": bool(best in top)}
    return out


def validate_proxies(
    base: Bench,
    config: ValidationConfig,
    tuning: FinalizeConfig,
    out: Path,
    *,
    progress: bool = True,
    on_candidate: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sample, score, fine-tune (resumable in ``out/band<c>/trial-<n>``) and correlate; plain data."""
    config.validate()
    tuning.validate()
    rows: list[dict[str, Any]] = []
    bands: list[dict[str, Any]] = []
    for band, (numbers, genes) in sample_bands(base, config).items():
        scores = predictors(base, genes, config)
        scorer = Scorer(base.handle, torch.device("cpu"))
        _, macs, _ = scorer.measure(genes)
        batch = scorer.codec.batch(genes)
        accuracy = []
        for i, number in enumerate(numbers):
            folder = out / f"band{round(100 * band)}" / f"trial-{int(number)}"
            metrics = base.tune(batch[i], tuning, folder, {"purpose": "validate-proxy"}, progress)
            accuracy.append(metrics["val_acc"])
            row = {
                "band": band,
                "trial": int(number),
                "macs": int(macs[i]),
                "macs_reduction_pct": 100.0 * (1 - macs[i] / base.handle.config["base"]["macs"]),
                **{f"pred_{k}": float(v[i]) for k, v in scores.items()},
                "val_acc": metrics["val_acc"],
                "test_acc": metrics["test_acc"],
            }
            rows.append(row)
            if on_candidate is not None:
                on_candidate(row)
        bands.append({"band": band, "candidates": len(numbers), "predictors": correlations(scores, np.array(accuracy))})
    return {"config": asdict(config), "tuning": asdict(tuning), "bands": bands, "rows": rows, "summary": summary(bands)}


def summary(bands: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per predictor: mean ρ and τ over bands, and the share of bands whose best is in its top 5."""
    out = {}
    for name in bands[0]["predictors"]:
        values = [b["predictors"][name] for b in bands]
        out[name] = {
            "spearman_mean": float(np.nanmean([v["spearman"] for v in values])),
            "kendall_mean": float(np.nanmean([v["kendall"] for v in values])),
            "top5_hit_rate": float(np.mean([v["best_in_top5"] for v in values])),
        }
    return out
