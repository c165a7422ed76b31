"""Importance criteria compared by the val accuracy of uniformly pruned digits models after BN recalibration.

For each model (resnet20 and the fully-connected mlp) one baseline per training seed is trained
on digits with ``train_baseline`` in a temporary directory; cells are the mean ± std over those
baselines (``random`` uses the same seed). Every criterion's importance is computed once,
on 8 train batches of 128 with the model in eval mode, as ``prune-search start`` does. Each
uniform candidate (every group at one keep ratio, strategy ``min``) is applied as channel
masks. BatchNorm statistics are re-estimated on 4 train batches and the val accuracy is
measured (``AdaptiveBNEvaluator``; the mlp has no BatchNorm, so there it is the plain masked
accuracy). Nothing is fine-tuned. The mlp table adds interval_adjoint with seed 001's output
seed ``[1, 1]`` (the gradient of Σ logits) next to the loss-bounding ``[−1, 1]`` of the
criterion.

Run:  python benchmarks/criteria_comparison.py [--ratios 0.7 0.5 0.3] [--seeds 0 1 2] [--resnet-epochs 20]
      [--mlp-epochs 30]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from prune_search.data import DataSpec, load_dataset
from prune_search.evaluators import AdaptiveBNEvaluator, compute_importance
from prune_search.evaluators.criteria_interval import input_box, interval_sweep
from prune_search.evaluators.importance import Importance, sanitize
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.training import TrainConfig, load_model, train_baseline

CRITERIA = {
    "resnet20": ["taylor", "hessian", "l1", "l1_greedy", "l2", "fpgm", "bn_scale", "random"],
    "mlp": ["taylor", "hessian", "l1", "l1_greedy", "l2", "fpgm", "interval_adjoint", "random"],
}
SEED_001 = "interval_adjoint, seed [1, 1]"


def uniform(space: PruningSpace, ratios: list[float]) -> CandidateBatch:
    """One candidate per ratio: every group at that keep ratio, strategy ``min``."""
    grid = torch.tensor(ratios, dtype=torch.float64)[:, None].expand(-1, len(space))
    return CandidateBatch(space.keep_counts(grid), torch.zeros(len(ratios), len(space), dtype=torch.int64))


def seed_001_importance(model, space: PruningSpace, batches) -> Importance:
    """interval_adjoint with the output adjoint seeded [1, 1] on every logit (seed 001's choice)."""
    significance = interval_sweep(model, *input_box(batches), seed_lower=1.0, seed_upper=1.0).significance()
    return sanitize(SEED_001, {g.name: significance[g.name] for g in space.groups})


def measure(name: str, epochs: int, seed: int, ratios: list[float], out: Path) -> dict[str, list[float]]:
    """Val accuracy per ratio for every criterion (and ``unpruned``) on one baseline; ``seconds/<criterion>`` too."""
    bundle = load_dataset(DataSpec("digits"))
    checkpoint = out / f"{name}-{seed}.pt"
    train_baseline(TrainConfig(model=name, epochs=epochs, seed=seed), checkpoint, progress=False, device="cpu")
    model, _ = load_model(checkpoint)
    model.eval()
    space = PruningSpace.from_model(model, next(iter(bundle.loader("train", 2)))[0])
    calibration = list(bundle.loader("train", 128))[:4]
    validation = list(bundle.loader("val", 256))
    train = list(bundle.loader("train", 128))[:8]
    full = AdaptiveBNEvaluator(model, space, compute_importance(model, space, "l1"), calibration, validation)
    results = {"unpruned": [float(full(space.full())[0])]}
    for criterion in CRITERIA[name] + ([SEED_001] if name == "mlp" else []):
        start = time.perf_counter()
        if criterion == SEED_001:
            importance = seed_001_importance(model, space, train)
        else:
            importance = compute_importance(model, space, criterion, batches=train, max_batches=8, seed=seed)
        results[f"seconds/{criterion}"] = [time.perf_counter() - start]
        evaluator = AdaptiveBNEvaluator(model, space, importance, calibration, validation)
        results[criterion] = evaluator(uniform(space, ratios)).tolist()
    return results


def _cell(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def table(name: str, runs: list[dict[str, list[float]]], ratios: list[float]) -> list[str]:
    """Markdown rows for one model: unpruned, then one row per criterion (mean ± std over baselines)."""
    rows = [f"| {name} | unpruned (BN recalibrated) | – | {_cell([r['unpruned'][0] for r in runs])} |"]
    rows[0] += " – |" * (len(ratios) + 1)
    for criterion in [k for k in runs[0] if k != "unpruned" and not k.startswith("seconds/")]:
        per_ratio = [_cell([r[criterion][i] for r in runs]) for i in range(len(ratios))]
        mean = _cell([statistics.fmean(r[criterion]) for r in runs])
        seconds = statistics.fmean(r[f"seconds/{criterion}"][0] for r in runs)
        rows.append(f"| {name} | {criterion} | {seconds:.2f} | – | {' | '.join(per_ratio)} | {mean} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.5, 0.3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one baseline per training seed")
    parser.add_argument("--resnet-epochs", type=int, default=20)
    parser.add_argument("--mlp-epochs", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, epochs in (("resnet20", args.resnet_epochs), ("mlp", args.mlp_epochs)):
            runs = [measure(name, epochs, seed, args.ratios, Path(tmp)) for seed in args.seeds]
            rows += table(name, runs, args.ratios)
            print(f"{name}: {len(runs)} baselines done after {time.perf_counter() - started:.0f} s", flush=True)
    keep = " | ".join(f"keep {r:.0%}" for r in args.ratios)
    val = load_dataset(DataSpec("digits")).sizes()["val"]
    print()
    print(
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; val accuracy on {val} digits images, "
        f"mean ± std over {len(args.seeds)} baselines (training seeds {', '.join(map(str, args.seeds))})"
    )
    print()
    print(f"| model | criterion | importance s | unpruned | {keep} | mean over ratios |")
    print("|---|---|---|---|" + "---|" * (len(args.ratios) + 1))
    for row in rows:
        print(row)
    print()
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
