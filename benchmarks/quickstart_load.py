"""The README's quick start on a quiet CPU and beside CPU-bound processes, measured side by side in one run.

Each run is ``prune-search start --study demo`` in a fresh folder with an empty baseline cache (so it trains
the demo baseline first, as on a fresh machine), torch's threads left to prune-search (no ``OMP_NUM_THREADS``
or ``PRUNE_SEARCH_THREADS`` from this process). The loaded runs have ``--busy`` CPU-bound processes (pure
Python loops, one core each) running beside them for the whole run. Prints wall time per run and the ratio of
the loaded median to the quiet median.

Run:  python benchmarks/quickstart_load.py [--busy 2] [--repeats 1]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "while True:\n    pass"


def quick_start(folder: Path) -> float:
    """Wall time (s) of the quick start's command in ``folder``, its cache empty."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PRUNE_SEARCH_THREADS")}
    env["PRUNE_SEARCH_CACHE"] = str(folder / "cache")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "prune_search", "start", "--study", "demo", "--no-progress"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"quick start failed: {done.stderr.strip().splitlines()[-1]}")
    return elapsed


def loaded(folder: Path, busy: int) -> float:
    """:func:`quick_start` with ``busy`` CPU-bound processes beside it."""
    burners = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        time.sleep(1.0)  # the burners have the CPU before the run starts
        return quick_start(folder)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the loaded runs.")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    quiet, busy = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="quickstart-") as folder:
            quiet.append(quick_start(Path(folder)))
        with tempfile.TemporaryDirectory(prefix="quickstart-") as folder:
            busy.append(loaded(Path(folder), args.busy))
    print(f"`prune-search start --study demo` from an empty cache, {os.cpu_count()} CPUs")
    print()
    print("| run | wall s |")
    print("|---|---|")
    for i, (q, b) in enumerate(zip(quiet, busy, strict=True)):
        print(f"| quiet #{i + 1} | {q:.1f} |")
        print(f"| beside {args.busy} CPU-bound processes #{i + 1} | {b:.1f} |")
    print()
    print(f"loaded / quiet (medians): {statistics.median(busy) / statistics.median(quiet):.2f}×")


if __name__ == "__main__":
    main()
