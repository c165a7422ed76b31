"""Proxy validation of a study: ``prune-search validate-proxy``, then a Markdown report of its CSVs.

Runs the command as a user would (finished fine-tuning runs in ``--out`` are read back, so a
rerun only adds what is missing) and writes ``--results``: the command, Spearman ρ / Kendall τ
of every predictor per MACs band and over the bands, whether the best fine-tuned candidate is
in each predictor's top 5, and every candidate's predictors and accuracies. Options it does not
know (``--bn-batches 4``, ``--lr 0.02`` ...) go to ``validate-proxy`` as they are.

Run (the quality benchmark's resnet20 study on Fashion-MNIST; about 1 CPU-minute per candidate):
    python benchmarks/proxy_validation.py --study quality-fashion-mnist-resnet20 \
        --storage sqlite:///runs/quality/resnet20.db --bands 0.5,0.65,0.8 --per-band 8 --epochs 1 \
        --out runs/validate-r20 --results benchmarks/results/proxy_validation_fmnist.md
"""

import argparse
import csv
import shlex
import subprocess
import sys
from pathlib import Path

# Stored negated in the CSV so that higher predicts better; the candidate table shows them as measured.
LOSSES = ("taylor_loss", "retained_fraction", "bn_kl", "bn_loss", "corrected", "whole_kl", "trained_kl", "uniformity")
LABELS = {
    "bn_accuracy": "BN-recal val acc",
    "corrected": "surrogate-corrected fitness",
    "whole_kl": "whole-candidate KL",
    "trained_kl": "KL after a short KD fine-tune",
}

DESCRIPTION = (
    "`bn_kl`, `bn_loss`: the measured fitness table's sums (KL to the unpruned model's outputs, loss increase); "
    "`corrected`: the study's fast fitness corrected by the surrogate fitted on its whole-candidate evaluations "
    "(a study with `--evaluations`); `whole_kl`: the accuracy evaluator's whole-candidate KL after BN "
    "re-estimation; `trained_kl`: the KL after a short KD fine-tune (the trained pick's score); `bn_accuracy`: "
    "val accuracy after BN recalibration."
)


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def predictor_names(rows: list[dict[str, str]]) -> list[str]:
    """The predictors of the correlations CSV, in the order the command wrote them."""
    return list(dict.fromkeys(r["predictor"] for r in rows))


def correlation_table(rows: list[dict[str, str]]) -> list[str]:
    bands = sorted({float(r["band"]) for r in rows})
    head = " | ".join(f"ρ / τ at {b:.0%}" for b in bands)
    lines = [
        f"| predictor | {head} | mean ρ | best in top 5 (bands) |",
        "|---|" + "---|" * (len(bands) + 2),
    ]
    for name in predictor_names(rows):
        cells = {float(r["band"]): r for r in rows if r["predictor"] == name}
        rhos = [float(cells[b]["spearman"]) for b in bands]
        pairs = " | ".join(f"{float(cells[b]['spearman']):+.2f} / {float(cells[b]['kendall']):+.2f}" for b in bands)
        hits = sum(cells[b]["best_in_top5"] == "True" for b in bands)
        lines.append(f"| {name} | {pairs} | {sum(rhos) / len(rhos):+.2f} | {hits} of {len(bands)} |")
    return lines


def candidate_table(rows: list[dict[str, str]], names: list[str]) -> list[str]:
    shown = [LABELS.get(name, name) for name in names]
    lines = [
        f"| band | trial | MACs ↓ | {' | '.join(shown)} | fine-tuned val % | test % |",
        "|---|---|---|" + "---|" * (len(names) + 2),
    ]
    ordered = sorted(rows, key=lambda r: (float(r["band"]), -float(r["val_acc"])))
    for r in ordered:
        values = [(-1 if name in LOSSES else 1) * float(r[f"pred_{name}"]) for name in names]
        paired = zip(names, values, strict=True)
        cells = " | ".join(f"{v:,.0f}" if name == "params" else f"{v:.3f}" for name, v in paired)
        lines.append(
            f"| {float(r['band']):.0%} | {r['trial']} | {float(r['macs_reduction_pct']):.1f} % | {cells} | "
            f"{100 * float(r['val_acc']):.2f} | {100 * float(r['test_acc']):.2f} |"
        )
    return lines


def repeatability_table(rows: list[dict[str, str]]) -> list[str]:
    """The seeds' agreement per band (``repeatability.csv`` of a run with ``--repeats`` 2 or more)."""
    lines = [
        "| band | seeds | seed vs seed ρ | ρ ceiling for a predictor |",
        "|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: float(r["band"])):
        lines.append(
            f"| {float(r['band']):.0%} | {r['repeats']} | {float(r['spearman']):+.2f} | {float(r['ceiling']):.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--bands", default="0.5,0.65,0.8")
    parser.add_argument("--band-width", default="0.04")
    parser.add_argument("--per-band", default="8")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/proxy_validation_fmnist.md"))
    parser.add_argument(
        "--report-only", action="store_true", help="Write --results from the CSVs already in --out; run nothing."
    )
    args, extra = parser.parse_known_args()
    command = ["validate-proxy", "--study", args.study, "--storage", args.storage, "--bands", args.bands]
    command += ["--band-width", args.band_width, "--per-band", args.per_band, "--epochs", args.epochs, *extra]
    command += ["--out", str(args.out), "--no-progress", "--device", "cpu"]
    shown = "prune-search " + shlex.join(command)
    if not args.report_only:
        print(f"$ {shown}", flush=True)
        done = subprocess.run([sys.executable, "-m", "prune_search", *command], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"command failed ({done.returncode}): {shown}\n{done.stderr[-3000:]}")
        print(done.stdout, flush=True)
    candidates, correlations = read(args.out / "candidates.csv"), read(args.out / "correlations.csv")
    names = predictor_names(correlations)
    agreement_file = args.out / "repeatability.csv"
    agreement = read(agreement_file) if agreement_file.is_file() else []
    seeds = (
        f"fine-tuned with {agreement[0]['repeats']} seeds each (the accuracies are their means)"
        if agreement
        else "each fine-tuned"
    )
    losses = [n for n in LOSSES[:-1] if n in names]
    lines = [
        f"# Proxy validation: study `{args.study}`",
        "",
        f"In each band of MACs reduction (± {float(args.band_width) / 2:.0%} of the base MACs), {args.per_band} "
        f"feasible trials drawn at random (seed 0), {seeds} for {args.epochs} epoch(s) with KD (lr 0.01, "
        "cosine, T=4, α=0.9), then ranked by every predictor against the fine-tuned val accuracy. "
        f"{', '.join(f'`{n}`' for n in losses)} are losses (lower predicts better; the correlations use "
        "their negatives); `uniformity` is the std of the keep ratios (lower predicts better). "
        f"{DESCRIPTION} A top-5 hit happens by chance with probability 5/{args.per_band}.",
        "",
        "```bash",
        shown,
        "```",
        "",
        *correlation_table(correlations),
        "",
        *(
            [
                "How far fine-tuning agrees with itself: the Spearman ρ of two seeds' val accuracies over the band's "
                "candidates, and the ρ with the seeds' mean that a predictor knowing every candidate's expected "
                "accuracy would reach, √(N ρ / (1 + (N − 1) ρ)) (Spearman–Brown).",
                "",
                *repeatability_table(agreement),
                "",
            ]
            if agreement
            else []
        ),
        *candidate_table(candidates, names),
        "",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
