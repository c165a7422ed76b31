"""``prune-search compare`` and ``prune-search validate-proxy``.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from prune_search.cli.options import (
    TUNING,
    BatchSizeOpt,
    DataRootOpt,
    DeviceOpt,
    ExpectedModelOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ProgressOpt,
    int_list,
    root_text,
    tuning_config,
)
from prune_search.cli.output import FormatOpt, Output, quiet_optuna
from prune_search.cli.storage_options import ExistingStudyOpt, StorageOpt, StudyCheckpointOpt
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.evidence.compare import METHODS, parse_methods, run_comparison, summarize
from prune_search.evidence.context import Bench
from prune_search.evidence.figures import comparison_figure, proxy_figure, write_html
from prune_search.evidence.proxy_validation import ValidationConfig, validate_proxies
from prune_search.search.study import open_study
from prune_search.storage import resolve_url
from prune_search.storage.study_data import replace_data

VALIDATION_KEY = "proxy_validation"
COMPARE_EPOCHS = 5  # fine-tuning epochs of every compared model
VALIDATION_EPOCHS = 1  # fine-tuning epochs of every candidate of a band
VALIDATION = ValidationConfig()

EpochsOpt = Annotated[int, typer.Option(help="Fine-tuning epochs of every candidate (the same budget for all).")]


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PruneSearchError(f"{flag} must be comma-separated numbers, e.g. 0.5,0.65,0.8; got '{text}'") from None


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


NUMERIC = ("seed", "macs", "params", "macs_reduction_pct", "params_reduction_pct", "val_acc", "test_acc")


def _merged(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` after the rows of an earlier ``results.csv`` at ``path`` that they do not redo (other
    budgets, methods or seeds), so that a call with other ``--methods`` keeps the earlier runs in the summary."""
    if not path.is_file():
        return rows
    done = {(r["budget"], r["method"], int(r["seed"])) for r in rows}
    with open(path, newline="") as handle:
        earlier = list(csv.DictReader(handle))
    kept = []
    for row in earlier:
        if row["method"] not in METHODS or (row["budget"], row["method"], int(row["seed"])) in done:
            continue
        typed: dict[str, Any] = dict(row)
        for key in NUMERIC:
            typed[key] = float(row[key]) if key.endswith(("_pct", "_acc")) else int(row[key])
        typed["trial"] = int(row["trial"]) if row.get("trial") else None
        kept.append(typed)
    return kept + rows


def compare_command(
    study: ExistingStudyOpt,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the runs, results.csv, summary.csv, figure (created if missing).")
    ],
    storage: StorageOpt = None,
    max_macs: Annotated[str, typer.Option(help="Comma-separated MACs budgets, e.g. 50%,35%,20%.")] = "50%,35%,20%",
    methods: Annotated[
        str, typer.Option(help=f"Comma-separated, of {', '.join(METHODS)}.")
    ] = "search,uniform,global_mean",
    seeds: Annotated[str, typer.Option(help="Comma-separated fine-tuning seeds.")] = "0",
    epochs: EpochsOpt = COMPARE_EPOCHS,
    lr: LrOpt = TUNING.lr,
    batch_size: BatchSizeOpt = TUNING.batch_size,
    kd: KdOpt = TUNING.kd,
    kd_temperature: KdTemperatureOpt = TUNING.temperature,
    kd_alpha: KdAlphaOpt = TUNING.alpha,
    checkpoint: StudyCheckpointOpt = None,
    model: ExpectedModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    fmt: FormatOpt = "table",
) -> None:
    """Under ``--format json`` or ``csv``: the summary (one row per budget and method)."""
    quiet_optuna()
    output = Output(fmt)
    config = tuning_config(epochs, lr, batch_size, kd, kd_temperature, kd_alpha)
    budgets = [b.strip() for b in max_macs.split(",") if b.strip()]
    chosen, seed_list = parse_methods(methods), int_list(seeds, "--seeds")
    if not budgets or not seed_list:
        raise PruneSearchError("give at least one --max-macs budget and one --seeds value")
    handle = open_study(resolve_url(storage), study, model=model)
    base = Bench.open(handle, resolve_device(device), checkpoint, root_text(data_root))

    def report(row: dict[str, Any]) -> None:
        output.note(
            f"{row['budget']:>6} {row['method']:<14} seed {row['seed']}: MACs −{row['macs_reduction_pct']:.1f}%  "
            f"val {100 * row['val_acc']:.2f}%  test {100 * row['test_acc']:.2f}%"
        )

    rows = run_comparison(base, budgets, chosen, seed_list, config, out, progress=progress, on_result=report)
    rows = _merged(out / "results.csv", rows)
    summary = summarize(rows)
    _write_csv(rows, out / "results.csv")
    _write_csv(summary, out / "summary.csv")
    write_html(comparison_figure(summary, None, f"{study}: front vs baselines"), out / "comparison.html")
    output.results(summary, lambda: _print_summary(summary))
    output.note(f"wrote {out / 'summary.csv'}, {out / 'results.csv'}, {out / 'comparison.html'}")


def _print_summary(summary: list[dict[str, Any]]) -> None:
    typer.echo("budget  method          MACs↓    params↓  val % (mean ± std)   test % (mean ± std)")
    for s in summary:
        typer.echo(
            f"{s['budget']:>6}  {s['method']:<14} {s['macs_reduction_pct']:5.1f}%  {s['params_reduction_pct']:6.1f}%  "
            f"{_spread(s['val_mean'], s['val_std'], s['seeds'])}  {_spread(s['test_mean'], s['test_std'], s['seeds'])}"
        )


def _spread(mean: float, std: float, seeds: int) -> str:
    """``mean ± std`` (%), or the mean alone where one seed gives no spread."""
    return f"{mean:6.2f} ± {std:.2f}      " if seeds > 1 else f"{mean:6.2f} (1 seed)   "


def validate_proxy_command(
    study: ExistingStudyOpt,
    storage: StorageOpt = None,
    bands: Annotated[str, typer.Option(help="MACs reductions of the bands, e.g. 0.5,0.65,0.8.")] = ",".join(
        f"{band:g}" for band in VALIDATION.bands
    ),
    band_width: Annotated[
        float, typer.Option(help="Full width of a band, as a fraction of base MACs.")
    ] = VALIDATION.width,
    per_band: Annotated[int, typer.Option(help="Candidates fine-tuned per band.")] = VALIDATION.per_band,
    epochs: EpochsOpt = VALIDATION_EPOCHS,
    lr: LrOpt = TUNING.lr,
    batch_size: BatchSizeOpt = TUNING.batch_size,
    kd: KdOpt = TUNING.kd,
    kd_temperature: KdTemperatureOpt = TUNING.temperature,
    kd_alpha: KdAlphaOpt = TUNING.alpha,
    bn_batches: Annotated[int, typer.Option(help="Train batches for BN recalibration.")] = VALIDATION.bn_batches,
    val_batches: Annotated[
        int, typer.Option(help="Val batches scoring the BN-recalibrated candidates.")
    ] = VALIDATION.val_batches,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and of fine-tuning.")] = VALIDATION.seed,
    repeats: Annotated[
        int,
        typer.Option(
            help="Fine-tuning seeds per candidate (SEED, SEED+1, ...): the predictors are ranked against their mean, "
            "and 2 or more also measure the seeds' agreement and the ρ ceiling it sets."
        ),
    ] = VALIDATION.repeats,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for runs, CSVs and the figure (created if missing; default runs/validate-proxy-STUDY).",
        ),
    ] = None,
    checkpoint: StudyCheckpointOpt = None,
    model: ExpectedModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    fmt: FormatOpt = "table",
) -> None:
    """Under ``--format json``: the whole result (as stored in the study); ``csv``: the correlations table."""
    quiet_optuna()
    output = Output(fmt)
    if bn_batches < 1 or val_batches < 1:
        raise PruneSearchError("--bn-batches and --val-batches must be at least 1")
    config = ValidationConfig(_floats(bands, "--bands"), band_width, per_band, bn_batches, val_batches, seed, repeats)
    config.validate()
    tuning = tuning_config(epochs, lr, batch_size, kd, kd_temperature, kd_alpha, seed)
    handle = open_study(resolve_url(storage), study, model=model)
    folder = out or Path("runs") / f"validate-proxy-{study}"
    base = Bench.open(handle, resolve_device(device), checkpoint, root_text(data_root))

    def report(row: dict[str, Any]) -> None:
        output.note(
            f"band {row['band']:.0%} trial {row['trial']}: MACs −{row['macs_reduction_pct']:.1f}%, "
            f"val {100 * row['val_acc']:.2f}%"
        )

    result = validate_proxies(base, config, tuning, folder, progress=progress, on_candidate=report)
    replace_data(handle.engine, handle.study_id, VALIDATION_KEY, json.dumps(result))
    table = [
        {"band": b["band"], "predictor": name, **values}
        for b in result["bands"]
        for name, values in b["predictors"].items()
    ]
    _write_csv(result["rows"], folder / "candidates.csv")
    _write_csv(table, folder / "correlations.csv")
    agreement = [{"band": b["band"], **b["repeatability"]} for b in result["bands"] if "repeatability" in b]
    if agreement:
        _write_csv(agreement, folder / "repeatability.csv")
    else:  # one seed per candidate this time: an earlier run's agreement no longer describes candidates.csv
        (folder / "repeatability.csv").unlink(missing_ok=True)
    write_html(proxy_figure(result), folder / "proxy_validation.html")
    output.results(result, lambda: _print_correlations(result, handle.config["proxy"]), rows=table)
    output.note(
        f"stored in the study (key '{VALIDATION_KEY}'); wrote {folder}/correlations.csv, candidates.csv, "
        + ("repeatability.csv, " if agreement else "")
        + "proxy_validation.html"
    )


def _print_correlations(result: dict[str, Any], default: str) -> None:
    typer.echo("predictor          " + "  ".join(f"ρ@{b['band']:.0%}  τ@{b['band']:.0%}" for b in result["bands"]))
    for name in result["summary"]:
        cells = "  ".join(
            f"{b['predictors'][name]['spearman']:+.2f}  {b['predictors'][name]['kendall']:+.2f} "
            for b in result["bands"]
        )
        mark = " (study's proxy)" if name == default else ""
        total = result["summary"][name]
        typer.echo(
            f"{name:<18} {cells}  mean ρ {total['spearman_mean']:+.2f}  top-5 hit {total['top5_hit_rate']:.0%}{mark}"
        )
    for b in result["bands"]:
        if "repeatability" in b:
            agreement = b["repeatability"]
            typer.echo(
                f"band {b['band']:.0%}: fine-tuning seed vs seed ρ {agreement['spearman']:+.2f}; a predictor's ρ with "
                f"the {agreement['repeats']}-seed mean can reach about {agreement['ceiling']:.2f}"
            )
