"""Start-up time: ``import torch``, ``import prune_search`` and ``prune-search --help``, each in fresh interpreters.

Each command runs ``--repeats`` times (default 5) in a new ``python`` process; the table gives the
median wall time in seconds and the difference to ``import torch`` alone ("beyond torch"; negative
when the command does not import torch at all). Then the first use of the Python API (the space and the
export reader import torch and torch-pruning), and the modules that the read commands load before they read
the study (``status``, ``studies``, ``front`` and ``dashboard`` import no torch; ``start`` does). With
``--importtime`` it also lists the slowest top-level imports of each command (``python -X importtime``,
cumulative microseconds). Run it on a quiet machine, e.g.

    OMP_NUM_THREADS=1 python benchmarks/import_time.py [--repeats 5] [--importtime]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import torch": ["-c", "import torch"],
    "import prune_search": ["-c", "import prune_search"],
    "prune-search --help": ["-m", "prune_search", "--help"],
    "from prune_search import PruningSpace, load_pruned": ["-c", "from prune_search import PruningSpace, load_pruned"],
    "status, studies (their command module)": ["-c", "import prune_search.cli.status"],
    "front (its command module)": ["-c", "import prune_search.cli.front"],
    "dashboard (its command module)": ["-c", "import prune_search.cli.dashboard"],
    "start (its command module)": ["-c", "import prune_search.cli.study"],
}


def _run(args: list[str], extra: list[str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *(extra or []), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        check=True,
    )
    return time.perf_counter() - start, result.stderr


def _slowest(stderr: str, count: int) -> list[tuple[int, str]]:
    """The ``count`` top-level imports with the largest cumulative time in ``-X importtime`` output."""
    rows = []
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match:  # a name with no indentation after the bar is a top-level import
            rows.append((int(match.group(1)), match.group(2)))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Fresh processes per command (median).")
    parser.add_argument("--importtime", action="store_true", help="Also list each command's slowest imports.")
    args = parser.parse_args()
    _run(COMMANDS["import prune_search"])  # warm the file cache and the bytecode
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every command alike
        for name, command in COMMANDS.items():
            times[name].append(_run(command)[0])
    medians = {name: statistics.median(values) for name, values in times.items()}
    torch_s = medians["import torch"]
    print(
        f"median of {args.repeats} fresh processes, Python {sys.version.split()[0]}, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}\n"
    )
    print("| command | seconds | beyond torch |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        beyond = "" if name == "import torch" else f"{seconds - torch_s:+.2f}"
        print(f"| `{name}` | {seconds:.2f} | {beyond} |")
    if args.importtime:
        for name, command in COMMANDS.items():
            print(f"\nslowest top-level imports of `{name}` (cumulative ms):")
            for micros, module in _slowest(_run(command, ["-X", "importtime"])[1], 8):
                print(f"  {micros / 1000:8.1f}  {module}")


if __name__ == "__main__":
    main()
