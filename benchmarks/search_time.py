"""Wall time of a default search: study creation (importance + fitness table), then 5,000 trials with and
without the multi-fidelity evaluations, side by side in one run.

For one trained checkpoint, two studies are created in a fresh SQLite file with the same flags except
``--evaluations`` (0, ``start``'s default, and this script's ``--evaluations``, 200): each row reports the
creation time, the search time to ``--trials``, the whole-candidate evaluations spent, the size of the
(measured) front and the time per evaluation.

Run (the issue's target: resnet20 on Fashion-MNIST, creation ≤ 2 min, the whole search ≤ 10 min on 2 CPU cores):
    python benchmarks/search_time.py --checkpoint runs/quality/fashion-mnist-resnet20.pt --dataset fashion-mnist
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.status import status
from prune_search.search.summary import front_rows


def one(url: str, name: str, options: StartOptions, trials: int) -> dict:
    started = time.perf_counter()
    handle, _ = create_or_join(url, name, options, device="cpu", progress=False)
    created = time.perf_counter()
    run_worker(handle, trials, device="cpu")
    done = time.perf_counter()
    info = status(handle)
    return {
        "evaluations": options.evaluations,
        "create_s": created - started,
        "search_s": done - created,
        "measured": info["evaluations"]["measured"],
        "front": len(front_rows(handle)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--evaluations", type=int, default=200, help="the multi-fidelity row's --evaluations")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'time.db'}"
        for evaluations in (0, args.evaluations):
            options = StartOptions(
                model=args.model, dataset=args.dataset, checkpoint=args.checkpoint, evaluations=evaluations
            )
            rows.append(one(url, f"time-{evaluations}", options, args.trials))
    print(f"{args.model} on {args.dataset}, {args.trials} trials, default flags, {args.threads} thread(s), SQLite")
    print()
    print("| --evaluations | creation s | search s | total s | measured | front | s per evaluation (extra time) |")
    print("|---|---|---|---|---|---|---|")
    plain = rows[0]["search_s"]
    for row in rows:
        extra = (row["search_s"] - plain) / row["measured"] if row["measured"] else float("nan")
        print(
            f"| {row['evaluations']} | {row['create_s']:.0f} | {row['search_s']:.0f} | "
            f"{row['create_s'] + row['search_s']:.0f} | {row['measured']} | {row['front']} | {extra:.2f} |"
        )


if __name__ == "__main__":
    main()
