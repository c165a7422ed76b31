"""The search's pick vs uniform, global and the peers' widths at equal MACs, each fine-tuned with the same KD budget.

For every model: the baseline checkpoint (trained with ``prune-search train`` when missing),
a study on a fine ratio grid (``--ratio-step 0.01``, so the baselines hit their budgets
closely), then ``prune-search compare`` at each MACs budget and seed. Every step is a
``prune-search`` command, run as a user would, and listed in the results file; finished
fine-tuning runs are read back, so adding seeds reruns only the new ones.

Writes ``--results`` (Markdown: commands, per-budget mean ± std, gaps to uniform and to the
best other method) and an SVG plot beside it. The studies are proxy-only (``start``'s default) unless
``--evaluations`` N > 0 makes them multi-fidelity, and ``search`` is what ``finalize --max-macs`` picks by
default.

Run (Fashion-MNIST, the real benchmark; hours on 2 CPU cores; ``--jobs 2`` fine-tunes two methods at once):
    python benchmarks/fmnist_quality.py --seeds 0,1,2 --jobs 2
Smoke run (digits, about a minute):
    python benchmarks/fmnist_quality.py --dataset digits --models resnet20 --budgets 50% \
        --seeds 0 --epochs 1 --trials 300 --baseline-epochs 3 --workdir /tmp/q --results /tmp/q/q.md
"""

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MODELS = {
    "resnet20": ["--model", "resnet20"],
    "vgg16_bn-small": ["--model", "vgg16_bn", "--model-option", "width_mult=0.25", "--model-option", "head=linear"],
}
METHODS = (
    "search",
    "front",
    "front_bn",
    "front_kl",
    "front_trained",
    "uniform",
    "global_min",
    "global_mean",
    "tp_global",
    "tp_global_taylor",
    "fastnas",
)
DEFAULT_METHODS = "search,uniform,tp_global_taylor,fastnas"


def spread(mean: str, std: str, seeds: str) -> str:
    """``mean ± std`` (%), or the mean alone where one seed gives no spread."""
    return f"{float(mean):.2f} ± {float(std):.2f}" if int(seeds) > 1 else f"{float(mean):.2f}"


def run(command: list[str], log: list[str]) -> str:
    """Run ``prune-search ARGS`` and return stdout; the command joins ``log``; failure stops the benchmark."""
    shown = "prune-search " + shlex.join(command)
    print(f"$ {shown}", flush=True)
    log.append(shown)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "prune_search", *command], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {shown}\n{done.stderr[-3000:]}")
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return done.stdout


SHARING = ("search", "front_trained", "uniform")  # search picks the same trial as one of the others


def split(methods: list[str], jobs: int) -> list[list[str]]:
    """``methods`` in at most ``jobs`` non-empty parts of about equal work, those of :data:`SHARING` kept in one
    part: ``search`` picks the halving winner (``front_trained``) or ``uniform``, and a compare call fine-tunes a
    trial two of its methods pick once. Each method is one unit of work (``search`` none beside the others);
    each goes to the part with the least work so far."""
    shared = [m for m in methods if m in SHARING]
    units = ([shared] if shared else []) + [[m] for m in methods if m not in SHARING]
    parts: list[list[str]] = [[] for _ in range(min(jobs, len(units)))]
    work = [0] * len(parts)
    for unit in units:
        lightest = work.index(min(work))
        parts[lightest] += unit
        work[lightest] += len(unit) - (1 if "search" in unit and len(unit) > 1 else 0)
    return parts


def run_calls(calls: list[tuple[list[str], list[str]]], jobs: int, log: list[str]) -> None:
    """Run ``compare`` calls, each ``(args, methods)``: one after the other, or with ``jobs`` > 1 split by method
    into ``jobs`` processes at once (fine-tuning runs in separate folders), then each call once more with all
    its methods, which reads every finished run back and writes the folder's complete results and summary."""
    if jobs <= 1:
        for compare, methods in calls:
            run([*compare, "--methods", ",".join(methods)], log)
        return
    parts = [[*compare, "--methods", ",".join(part)] for compare, methods in calls for part in split(methods, jobs)]
    if len(parts) > 1:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(lambda command: run(command, log), parts))
    for compare, methods in calls:
        run([*compare, "--methods", ",".join(methods)], log)


def baseline_accuracy(checkpoint: Path, log: list[str]) -> tuple[float, float]:
    accs = []
    for split in ("val", "test"):
        command = ["evaluate", "--checkpoint", str(checkpoint), "--split", split, "--format", "json"]
        out = run([*command, "--device", "cpu"], log)
        accs.append(100 * float(json.loads(out)["accuracy"]))
    return accs[0], accs[1]


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def markdown(model: str, base: tuple[float, float], summary: list[dict]) -> list[str]:
    lines = [
        f"### {model} (unpruned: val {base[0]:.2f} %, test {base[1]:.2f} %)",
        "",
        "| budget | method | trial | MACs ↓ | params ↓ | seeds | val % | test % | test − uniform | test − best other |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        same = {r["method"]: float(r["test_mean"]) for r in summary if r["budget"] == row["budget"]}
        test = float(row["test_mean"])
        others = [v for m, v in same.items() if m != row["method"]]
        gaps = [
            f"{test - same['uniform']:+.2f}" if "uniform" in same and row["method"] != "uniform" else "",
            f"{test - max(others):+.2f}" if others else "",
        ]
        lines.append(
            f"| {row['budget']} | {row['method']} | {row['trial']} | {float(row['macs_reduction_pct']):.1f} % | "
            f"{float(row['params_reduction_pct']):.1f} % | {row['seeds']} | "
            f"{spread(row['val_mean'], row['val_std'], row['seeds'])} | "
            f"{spread(row['test_mean'], row['test_std'], row['seeds'])} | {gaps[0]} | {gaps[1]} |"
        )
    return [*lines, ""]


def plot(results: dict[str, tuple[tuple[float, float], list[dict]]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (model, (base, summary)) in zip(axes[0], results.items(), strict=True):
        for method in METHODS:
            rows = sorted((r for r in summary if r["method"] == method), key=lambda r: float(r["macs_reduction_pct"]))
            if rows:
                ax.errorbar(
                    [float(r["macs_reduction_pct"]) for r in rows],
                    [float(r["test_mean"]) for r in rows],
                    yerr=[float(r["test_std"]) for r in rows],
                    marker="o",
                    capsize=3,
                    label=method,
                )
        ax.axhline(base[1], linestyle=":", color="grey", label="unpruned")
        ax.set(title=model, xlabel="MACs reduction (%)", ylabel="test accuracy (%)")
        ax.legend()
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--budgets", default="50%,35%,20%", help="MACs kept: 50%% = a 50%% reduction")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--model-seeds", action="append", default=[], help="MODEL=SEEDS overriding --seeds")
    parser.add_argument("--model-budgets", action="append", default=[], help="MODEL=BUDGETS overriding --budgets")
    parser.add_argument("--budget-seeds", action="append", default=[], help="BUDGET=SEEDS overriding the seeds there")
    parser.add_argument("--method-seeds", action="append", default=[], help="METHOD=SEEDS overriding the seeds of it")
    parser.add_argument("--budget-methods", action="append", default=[], help="BUDGET=METHODS overriding --methods")
    parser.add_argument("--epochs", type=int, default=2, help="KD fine-tuning epochs of every compared model")
    parser.add_argument(
        "--jobs", type=int, default=1, help="compare processes at once per budget, the methods split among them"
    )
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="compare's --methods")
    parser.add_argument("--proxy", default="bn_kl", help="the studies' --proxy")
    parser.add_argument("--ratio-step", default="0.01", help="the studies' --ratio-step")
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--evaluations", type=int, default=0, help="the studies' --evaluations (0: proxy only)")
    parser.add_argument("--baseline-epochs", type=int, default=15)
    parser.add_argument("--checkpoint", action="append", default=[], help="MODEL=PATH of an existing baseline")
    parser.add_argument("--workdir", type=Path, default=Path("runs/quality"))
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/fmnist_quality.md"))
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.checkpoint)
    seeds_of = dict(item.split("=", 1) for item in args.model_seeds)
    budgets_of = dict(item.split("=", 1) for item in args.model_budgets)
    seeds_at = dict(item.split("=", 1) for item in args.budget_seeds)
    seeds_of_method = dict(item.split("=", 1) for item in args.method_seeds)
    methods_at = dict(item.split("=", 1) for item in args.budget_methods)
    args.workdir.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    results = {}
    for model in args.models.split(","):
        flags = MODELS[model]
        checkpoint = Path(given.get(model, args.workdir / f"{args.dataset}-{model}.pt"))
        train = ["train", *flags, "--dataset", args.dataset, "--epochs", str(args.baseline_epochs)]
        train += ["--out", str(checkpoint), "--no-progress", "--device", "cpu"]
        if model in given:
            log.append(f"# {model}: baseline {checkpoint} given (the README's 'prune-search train' command)")
        elif checkpoint.is_file():
            log.append(f"prune-search {shlex.join(train)}  # run by an earlier invocation; its checkpoint is reused")
        else:
            run(train, log)
        base = baseline_accuracy(checkpoint, log)
        study = f"quality-{args.dataset}-{model}-{args.proxy}" + (f"-mf{args.evaluations}" if args.evaluations else "")
        storage = f"sqlite:///{args.workdir / model}.db"
        start = ["start", "--study", study, "--storage", storage, *flags, "--dataset", args.dataset]
        start += ["--checkpoint", str(checkpoint), "--trials", str(args.trials), "--ratio-step", args.ratio_step]
        start += ["--proxy", args.proxy, "--evaluations", str(args.evaluations)]
        run([*start, "--no-progress", "--device", "cpu"], log)
        summary = []
        for budget in budgets_of.get(model, args.budgets).split(","):
            out = args.workdir / model / budget.replace("%", "pct")
            seeds = seeds_at.get(budget, seeds_of.get(model, args.seeds))
            groups: dict[str, list[str]] = {}  # seeds → the methods run with them (one compare call each)
            for method in methods_at.get(budget, args.methods).split(","):
                groups.setdefault(seeds_of_method.get(method, seeds), []).append(method)
            calls = []
            for method_seeds, methods in groups.items():
                compare = ["compare", "--study", study, "--storage", storage, "--max-macs", budget]
                compare += ["--epochs", str(args.epochs), "--seeds", method_seeds, "--out", str(out)]
                compare += ["--no-progress", "--device", "cpu"]
                calls.append((compare, methods))
            run_calls(calls, args.jobs, log)
            summary += read_summary(out / "summary.csv")
        results[model] = (base, summary)
    svg = args.results.with_suffix(".svg")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    plot(results, svg)
    lines = [
        f"# The search's pick vs uniform, global and peer pruning on {args.dataset}",
        "",
        f"Every compared model is fine-tuned with KD for {args.epochs} epochs (SGD lr 0.01, cosine, T=4, "
        f"α=0.9); mean ± sample std over the seeds in the `seeds` column. A budget of 50 % keeps at most half the "
        f"base MACs; `search` is what `finalize --max-macs` picks by default, `front` the best-scored front trial "
        f"within it (proxy `{args.proxy}`; with `--evaluations` {args.evaluations} > 0 the measured front and "
        "the least measured KL), `front_bn` the best by BN-recalibrated val accuracy of the 16 front trials with "
        "the most MACs within it, `front_trained` successive halving by short KD fine-tunes over those 16 and the "
        "uniform and global baselines (when two methods pick one trial the run is shared), `uniform`, `global_*` "
        "and the peers `tp_global*` (Torch-Pruning's global pruning) and `fastnas` (NVIDIA ModelOpt FastNAS), "
        "their widths with our channel choice, the candidates with the most MACs within it (README, `compare`). "
        "Test accuracy is measured once, on the "
        "best val epoch. Finished runs are read back, "
        "so the fine-tuning runs may come from earlier invocations of the same commands.",
        "",
        f"![plot]({svg.name})",
        "",
    ]
    for model, (base, summary) in results.items():
        lines += markdown(model, base, summary)
    invocation = f"python benchmarks/fmnist_quality.py {shlex.join(sys.argv[1:])}"
    lines += ["## Commands", "", f"`{invocation}` ran these:", "", "```bash", *log, "```", ""]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
