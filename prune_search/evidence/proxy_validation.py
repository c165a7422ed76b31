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

Fine-tuned accuracy is itself noisy: with ``repeats`` N ≥ 2 every candidate is fine-tuned with N
seeds, the predictors are ranked against the mean, and each band reports its *repeatability*: the
Spearman ρ between two seeds' accuracies (mean over the pairs) and the *ceiling* it sets,
√(N ρ / (1 + (N − 1) ρ)) (Spearman–Brown), about the highest ρ any predictor can reach against
the N-seed mean however well it knows the candidates.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from itertools import combinations
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
    """Bands as MACs reductions in (0, 1), their full width as a fraction of the base MACs; ``repeats``
    fine-tuning seeds per candidate."""

    bands: tuple[float, ...] = (0.5, 0.65, 0.8)
    width: float = 0.04
    per_band: int = 10
    bn_batches: int = 8
    val_batches: int = 4
    seed: int = 0
    repeats: int = 1

    def validate(self) -> None:
        if not self.bands or any(not 0 < b < 1 for b in self.bands):
            raise PruneSearchError("--bands must be MACs reductions between 0 and 1, e.g. 0.5,0.65,0.8")
        if not 0 < self.width < 1:
            raise PruneSearchError(f"--band-width must be in (0, 1), got {self.width}")
        if self.per_band < 3:
            raise PruneSearchError(f"--per-band must be at least 3 to rank anything, got {self.per_band}")
        if self.bn_batches < 1 or self.val_batches < 1:
            raise PruneSearchError("--bn-batches and --val-batches must be at least 1")
        if self.repeats < 1:
            raise PruneSearchError(
                f"--repeats must be at least 1 (fine-tuning seeds per candidate), got {self.repeats}"
            )


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


def repeatability(accuracy: np.ndarray) -> dict[str, float | int]:
    """For val accuracies ``[K, N]`` (candidates × fine-tuning seeds, N ≥ 2): the mean Spearman ρ between two
    seeds' columns and the ceiling √(N ρ / (1 + (N − 1) ρ)) it sets on a predictor's ρ with the row means (0 when
    the seeds do not agree at all; NaN where a seed's accuracies are all equal)."""
    repeats = accuracy.shape[1]
    pairs = [stats.spearmanr(accuracy[:, a], accuracy[:, b]).statistic for a, b in combinations(range(repeats), 2)]
    rho = float(np.mean(pairs))
    if np.isnan(rho) or rho <= 0:
        return {"repeats": repeats, "spearman": rho, "ceiling": rho if np.isnan(rho) else 0.0}
    ceiling = float(np.sqrt(repeats * rho / (1 + (repeats - 1) * rho)))
    return {"repeats": repeats, "spearman": rho, "ceiling": ceiling}


def validate_proxies(
    base: Bench,
    config: ValidationConfig,
    tuning: FinalizeConfig,
    out: Path,
    *,
    progress: bool = True,
    on_candidate: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Sample, score, fine-tune (resumable in ``out/band<c>/trial-<n>``, the further seeds' runs in
    ``trial-<n>-seed<s>``) and correlate; plain data."""
    config.validate()
    tuning.validate()
    seeds = [tuning.seed + r for r in range(config.repeats)]
    rows: list[dict[str, Any]] = []
    bands: list[dict[str, Any]] = []
    for band, (numbers, genes) in sample_bands(base, config).items():
        scores = predictors(base, genes, config)
        scorer = Scorer(base.handle, torch.device("cpu"))
        _, macs, _ = scorer.measure(genes)
        batch = scorer.codec.batch(genes)
        accuracy = np.zeros((len(numbers), len(seeds)))
        for i, number in enumerate(numbers):
            runs = {}
            for r, seed in enumerate(seeds):
                name = f"trial-{int(number)}" + (f"-seed{seed}" if r else "")
                folder = out / f"band{round(100 * band)}" / name
                tuned = replace(tuning, seed=seed)
                runs[seed] = base.tune(batch[i], tuned, folder, {"purpose": "validate-proxy"}, progress)
                accuracy[i, r] = runs[seed]["val_acc"]
            row = {
                "band": band,
                "trial": int(number),
                "macs": int(macs[i]),
                "macs_reduction_pct": 100.0 * (1 - macs[i] / base.handle.config["base"]["macs"]),
                **{f"pred_{k}": float(v[i]) for k, v in scores.items()},
                "val_acc": float(accuracy[i].mean()),
                "test_acc": float(np.mean([m["test_acc"] for m in runs.values()])),
            }
            if len(seeds) > 1:
                row |= {f"{key}_seed{seed}": m[key] for seed, m in runs.items() for key in ("val_acc", "test_acc")}
            rows.append(row)
            if on_candidate is not None:
                on_candidate(row)
        entry = {"band": band, "candidates": len(numbers), "predictors": correlations(scores, accuracy.mean(1))}
        if len(seeds) > 1:
            entry["repeatability"] = repeatability(accuracy)
        bands.append(entry)
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
