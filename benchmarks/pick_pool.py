"""Does the trained pick rank its pool the way the full fine-tune does? Ground truth for ``finalize --pick trained``.

At one MACs budget, the trained pick's pool (the front trials with the most MACs within it and the uniform and
global references, :func:`~prune_search.finalize.rerank.trained_rerank`) is scored by every short-fine-tune
score the :class:`TrainedEvaluator` gives (held-out train accuracy, cross-entropy, KL to the unpruned model) at
each rung length, and every member is fine-tuned with ``compare``'s recipe (KD, ``--epochs``, ``--seed``) for
its val/test accuracy. The table shows, per score: its Spearman ρ with fine-tuned val accuracy over the pool,
the member successive halving by that score picks (the same rungs as the pick, from the scores measured here:
each member is trained from the same seed at every length, so the scores are those the pick sees), and that
member's test accuracy beside uniform's and the pool's best.

Finished fine-tunes and scores are read back from ``--out``, so a rerun only does what is missing.

Run (after ``benchmarks/fmnist_quality.py`` made the study; tens of minutes per budget on 2 CPU cores):
    python benchmarks/pick_pool.py --study quality-fashion-mnist-resnet20-bn_kl \
        --storage sqlite:///runs/q15/resnet20.db --max-macs 20% --epochs 2 \
        --out runs/pick-pool/resnet20-20pct --results benchmarks/results/pick_pool_fmnist_resnet20.md
"""

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from prune_search.evaluators.trained import SCORES, TrainedEvaluator
from prune_search.evidence.context import Bench
from prune_search.finalize.rerank import (
    REFERENCES,
    TRAINED_BATCH,
    TRAINED_RUNGS,
    nearest,
    reference_rows,
    successive_halving,
    trained_batches,
    trained_pool,
)
from prune_search.finalize.select import fitting_rows
from prune_search.finalize.tune import FinalizeConfig
from prune_search.search import open_study
from prune_search.search.codec import CandidateCodec
from prune_search.search.summary import front_rows

LOWER_IS_BETTER = {"accuracy": False, "loss": True, "kl": True}


def halving_pick(table: dict[int, list[float]], rungs: list[int], lower: bool) -> int:
    """The trial successive halving (the trained pick's, :func:`successive_halving`) picks from scores measured
    beforehand: ``table[trial][rung]``, ``lower`` when a lower score is better."""
    trials, sign = list(table), 1.0 if lower else -1.0

    def score(alive: list[int], steps: int) -> list[float]:
        return [sign * table[trials[i]][rungs.index(steps)] for i in alive]

    return trials[successive_halving(len(trials), rungs, score)[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--max-macs", required=True, help="the budget, as finalize takes it (20%% = −80 %% MACs)")
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of the ground truth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rungs", default=",".join(map(str, TRAINED_RUNGS)), help="KD steps of each rung")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rungs = [int(s) for s in args.rungs.split(",")]
    started = time.perf_counter()

    handle = open_study(args.storage, args.study)
    device = torch.device("cpu")
    bench = Bench.open(handle, device)
    fitting = fitting_rows(handle, front_rows(handle), args.max_macs, None)
    front = nearest(fitting)
    references = reference_rows(handle, args.max_macs, None, bench.model, bench.bundle, device)  # name → row
    pool = trained_pool(fitting, list(references.values()))
    kinds = {row["trial"]: "front" for row in front} | {row["trial"]: name for name, row in references.items()}
    codec = CandidateCodec(handle.space)
    base = handle.config["base"]
    args.out.mkdir(parents=True, exist_ok=True)

    score_file = args.out / "scores.json"
    measured = json.loads(score_file.read_text()) if score_file.is_file() else {}
    train, held_out = trained_batches(bench.bundle)
    evaluator = TrainedEvaluator(bench.model, handle.space, handle.importance, train, held_out, device)
    for steps in rungs:
        key = str(steps)
        if key not in measured or set(measured[key]) != {str(r["trial"]) for r in pool}:
            print(f"scoring {len(pool)} members after {steps} KD steps", flush=True)
            out = evaluator(codec.from_rows(pool), steps)
            measured[key] = {str(r["trial"]): {s: float(out[s][i]) for s in SCORES} for i, r in enumerate(pool)}
            score_file.write_text(json.dumps(measured, indent=1))

    config = FinalizeConfig(epochs=args.epochs, seed=args.seed)
    truth = {}
    for i, row in enumerate(pool):
        print(f"fine-tuning member {i + 1}/{len(pool)}: trial {row['trial']}", flush=True)
        folder = args.out / f"trial-{row['trial']}" / f"seed{args.seed}"
        tag = {"benchmark": "pick_pool", "budget": args.max_macs}
        truth[row["trial"]] = bench.tune(codec.from_rows([row]), config, folder, tag, progress=False)

    trials = [r["trial"] for r in pool]
    val = np.array([100 * truth[t]["val_acc"] for t in trials])
    test = np.array([100 * truth[t]["test_acc"] for t in trials])
    uniform = next((t for t, k in kinds.items() if k == "uniform"), None)
    lines = [
        f"# The trained pick's pool at {args.max_macs} MACs: short-fine-tune scores vs the full fine-tune",
        "",
        f"Study `{args.study}`: the {len(front)} front trials with the most MACs within the budget and the "
        f"{len(references)} references ({', '.join(REFERENCES)}), each scored after {', '.join(map(str, rungs))} KD "
        f"steps (batch {TRAINED_BATCH}, lr {evaluator.lr}, on {len(train)} fixed train batches; scored on "
        f"{len(held_out)} held-out train "
        f"batches), and each fine-tuned with KD for {args.epochs} epoch(s), seed {args.seed} (compare's recipe). "
        f"ρ: Spearman with fine-tuned val accuracy over the {len(pool)} members. Halving: successive halving by "
        f"the score over the rungs, keeping the best third, as `finalize --pick trained` does with "
        f"`{'/'.join(map(str, TRAINED_RUNGS))}` steps.",
        "",
        "```bash",
        "python " + shlex.join(sys.argv),
        "```",
        "",
        "| score | steps | ρ with val | picks (alone) | its test % | halving picks | its test % |",
        "|---|---|---|---|---|---|---|",
    ]
    for score in SCORES:
        lower = LOWER_IS_BETTER[score]
        table = {t: [measured[str(s)][str(t)][score] for s in rungs] for t in trials}
        winner = halving_pick(table, rungs, lower)
        for r, steps in enumerate(rungs):
            values = np.array([table[t][r] for t in trials])
            rho = stats.spearmanr(-values if lower else values, val).statistic
            alone = trials[int(np.argmin(values) if lower else np.argmax(values))]
            shown = (f"{winner}", f"{test[trials.index(winner)]:.2f}") if r == len(rungs) - 1 else ("", "")
            lines.append(
                f"| {score} | {steps} | {rho:+.2f} | {alone} | {test[trials.index(alone)]:.2f} | "
                f"{shown[0]} | {shown[1]} |"
            )
    for name, values in (("params", [r["params"] for r in pool]), ("MACs", [r["macs"] for r in pool])):
        rho = stats.spearmanr(values, val).statistic
        best = trials[int(np.argmax(values))]
        lines.append(f"| {name} (more) | – | {rho:+.2f} | {best} | {test[trials.index(best)]:.2f} |  |  |")
    oracle = trials[int(np.argmax(val))]
    lines += [
        "",
        f"Best member by val: trial {oracle} ({kinds[oracle]}), test {test[trials.index(oracle)]:.2f} %; "
        + (f"uniform (trial {uniform}): test {test[trials.index(uniform)]:.2f} %; " if uniform is not None else "")
        + f"pool test accuracy {test.min():.2f}–{test.max():.2f} %, mean {test.mean():.2f} %.",
        "",
        "| trial | kind | MACs ↓ | params ↓ | "
        + " | ".join(f"{s} @{steps}" for steps in rungs for s in SCORES)
        + " | val % | test % |",
        "|---|---|---|---|" + "---|" * (len(rungs) * len(SCORES)) + "---|---|",
    ]
    for row in sorted(pool, key=lambda r: -truth[r["trial"]]["val_acc"]):
        t = row["trial"]
        cells = " | ".join(f"{measured[str(steps)][str(t)][s]:.4f}" for steps in rungs for s in SCORES)
        lines.append(
            f"| {t} | {kinds[t]} | {100 * (1 - row['macs'] / base['macs']):.1f} % | "
            f"{100 * (1 - row['params'] / base['params']):.1f} % | {cells} | "
            f"{100 * truth[t]['val_acc']:.2f} | {100 * truth[t]['test_acc']:.2f} |"
        )
    lines += [
        "",
        f"Wall time of this invocation: {time.perf_counter() - started:.0f} s (torch threads {args.threads}).",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")
    print(args.results.read_text())


if __name__ == "__main__":
    main()
