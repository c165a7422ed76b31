"""How far below uniform's KL does the trained pick's halving winner land? The evidence for ``--margin``.

At each MACs budget, the trained pick (:func:`~prune_search.finalize.rerank.trained_rerank`, the pool of
``finalize --pick trained``) is run once; the table shows the halving winner, its KL (nats per sample, to the
unpruned model on held-out train images) after the last rung's KD steps, uniform pruning's KL after the same
steps (in the last rung or scored once more), how far the winner lies below uniform (``1 − winner / uniform``),
and what the pick is with ``--margin`` (uniform kept unless that share is reached). Set it beside the
fine-tuned accuracies of both trials (``benchmarks/fmnist_quality.py``, methods ``search`` / ``front_trained``
and ``uniform``) to see whether the short-fine-tune lead carries over.

Run (after ``benchmarks/fmnist_quality.py`` made the study; minutes per budget on a CPU):
    python benchmarks/pick_margin.py --study quality-fashion-mnist-resnet20-bn_kl \
        --storage sqlite:///runs/quality/resnet20.db --budgets 20%,35%,50% --results pick_margin.md
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from prune_search.evidence.context import Bench
from prune_search.finalize.rerank import SWITCH_MARGIN, reference_rows, trained_rerank
from prune_search.finalize.select import fitting_rows
from prune_search.search import open_study
from prune_search.search.summary import front_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--budgets", default="20%,35%,50%", help="MACs kept, as finalize --max-macs takes them")
    parser.add_argument("--margin", type=float, default=SWITCH_MARGIN, help="the margin whose pick is shown")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    handle = open_study(args.storage, args.study)
    bench = Bench.open(handle, device)
    base_macs = handle.config["base"]["macs"]
    lines = [
        f"| budget | winner (trial) | its KL | uniform (trial) | its KL | winner below uniform | pick, margin "
        f"{args.margin:.2f} | MACs ↓ of the pick | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
        started = time.perf_counter()
        fitting = fitting_rows(handle, front_rows(handle), budget, None)
        references = reference_rows(handle, budget, None, bench.model, bench.bundle, device)
        pick = trained_rerank(handle, fitting, bench.model, bench.bundle, device, references, margin=args.margin)
        seconds = time.perf_counter() - started
        check, names = pick.check, pick.names
        if check is None:  # the halving winner is uniform itself
            trial = pick.row["trial"]
            winner = f"{names.get(trial, 'front')} ({trial})"
            row = [winner, f"{pick.kl:.4f}", winner, f"{pick.kl:.4f}", "0 %", winner]
        else:
            leader, incumbent = check["leader"], check["incumbent"]
            below = 1 - check["leader_kl"] / check["incumbent_kl"]
            chosen = pick.row["trial"]
            row = [
                f"{names.get(leader, 'front')} ({leader})",
                f"{check['leader_kl']:.4f}",
                f"uniform ({incumbent})",
                f"{check['incumbent_kl']:.4f}",
                f"{100 * below:.0f} %",
                f"{names.get(chosen, 'front')} ({chosen})",
            ]
        reduction = 100 * (1 - pick.row["macs"] / base_macs)
        lines.append(f"| {budget} | " + " | ".join(row) + f" | {reduction:.1f} % | {seconds:.0f} |")
        print(lines[-1], flush=True)
    command = "python " + shlex.join(["benchmarks/pick_margin.py", *sys.argv[1:]])
    text = "\n".join([f"`{command}` (torch threads {args.threads}):", "", *lines, ""])
    print(text)
    if args.results is not None:
        args.results.write_text(text)


if __name__ == "__main__":
    main()
