"""``prune-search compare`` and ``prune-search validate-proxy``.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from prune_search.cli.options import (
    BatchSizeOpt,
    DataRootOpt,
    DeviceOpt,
    ExpectedModelOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ProgressOpt,
    StorageOpt,
    StudyOpt,
    quiet_optuna,
)
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.evidence.compare import METHODS, parse_methods, run_comparison, summarize
from prune_search.evidence.context import StudyBase
from prune_search.evidence.figures import comparison_figure, proxy_figure, write_html
from prune_search.evidence.proxy_validation import ValidationConfig, validate_proxies
from prune_search.finalize.tune import FinalizeConfig
from prune_search.search.study import open_study
from prune_search.storage import resolve_url
from prune_search.storage.study_data import put_data

VALIDATION_KEY = "proxy_validation"

EpochsOpt = Annotated[int, typer.Option(help="Fine-tuning epochs of every candidate (the same budget for all).")]
CheckpointOpt = Annotated[Path | None, typer.Option(help="Path of the study's base checkpoint here.")]


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PruneSearchError(f"{flag} must be comma-separated integers, e.g. 0,1,2; got '{text}'") from None


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
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help="Folder for the runs, results.csv, summary.csv, figure.")],
    storage: StorageOpt = None,
    max_macs: Annotated[str, typer.Option(help="Comma-separated MACs budgets, e.g. 50%,35%,20%.")] = "50%,35%,20%",
    methods: Annotated[
        str, typer.Option(help=f"Comma-separated, of {', '.join(METHODS)}.")
    ] = "search,uniform,global_mean",
    seeds: Annotated[str, typer.Option(help="Comma-separated fine-tuning seeds.")] = "0",
    epochs: EpochsOpt = 5,
    lr: LrOpt = 0.01,
    batch_size: BatchSizeOpt = 128,
    kd: KdOpt = True,
    kd_temperature: KdTemperatureOpt = 4.0,
    kd_alpha: KdAlphaOpt = 0.9,
    checkpoint: CheckpointOpt = None,
    model: ExpectedModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    quiet_optuna()
    config = FinalizeConfig(epochs, lr, batch_size, kd=kd, temperature=kd_temperature, alpha=kd_alpha)
    config.validate()
    budgets = [b.strip() for b in max_macs.split(",") if b.strip()]
    chosen, seed_list = parse_methods(methods), _ints(seeds, "--seeds")
    if not budgets or not seed_list:
        raise PruneSearchError("give at least one --max-macs budget and one --seeds value")
    handle = open_study(resolve_url(storage), study, model=model)
    base = StudyBase.open(handle, resolve_device(device), checkpoint, str(data_root) if data_root else None)

    def report(row: dict[str, Any]) -> None:
        typer.echo(
            f"{row['budget']:>6} {row['method']:<14} seed {row['seed']}: MACs −{row['macs_reduction_pct']:.1f}%  "
            f"val {100 * row['val_acc']:.2f}%  test {100 * row['test_acc']:.2f}%"
        )

    rows = run_comparison(base, budgets, chosen, seed_list, config, out, progress=progress, on_result=report)
    rows = _merged(out / "results.csv", rows)
    summary = summarize(rows)
    _write_csv(rows, out / "results.csv")
    _write_csv(summary, out / "summary.csv")
    write_html(comparison_figure(summary, None, f"{study}: front vs baselines"), out / "comparison.html")
    typer.echo("budget  method          MACs↓    params↓  val % (mean ± std)   test % (mean ± std)")
    for s in summary:
        typer.echo(
            f"{s['budget']:>6}  {s['method']:<14} {s['macs_reduction_pct']:5.1f}%  {s['params_reduction_pct']:6.1f}%  "
            f"{s['val_mean']:6.2f} ± {s['val_std']:.2f}       {s['test_mean']:6.2f} ± {s['test_std']:.2f}"
        )
    typer.echo(f"wrote {out / 'summary.csv'}, {out / 'results.csv'}, {out / 'comparison.html'}")


def validate_proxy_command(
    study: StudyOpt,
    storage: StorageOpt = None,
    bands: Annotated[str, typer.Option(help="MACs reductions of the bands, e.g. 0.5,0.65,0.8.")] = "0.5,0.65,0.8",
    band_width: Annotated[float, typer.Option(help="Full width of a band, as a fraction of base MACs.")] = 0.04,
    per_band: Annotated[int, typer.Option(help="Candidates fine-tuned per band.")] = 10,
    epochs: EpochsOpt = 1,
    lr: LrOpt = 0.01,
    batch_size: BatchSizeOpt = 128,
    kd: KdOpt = True,
    kd_temperature: KdTemperatureOpt = 4.0,
    kd_alpha: KdAlphaOpt = 0.9,
    calibration_batches: Annotated[int, typer.Option(help="Train batches for BN recalibration.")] = 8,
    val_batches: Annotated[int, typer.Option(help="Val batches scoring the BN-recalibrated candidates.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the sampling and of fine-tuning.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for runs, CSVs and the figure.")] = None,
    checkpoint: CheckpointOpt = None,
    model: ExpectedModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    quiet_optuna()
    config = ValidationConfig(_floats(bands, "--bands"), band_width, per_band, calibration_batches, val_batches, seed)
    tuning = FinalizeConfig(epochs, lr, batch_size, kd=kd, temperature=kd_temperature, alpha=kd_alpha, seed=seed)
    config.validate()
    tuning.validate()
    handle = open_study(resolve_url(storage), study, model=model)
    folder = out or Path("runs") / f"validate-proxy-{study}"
    base = StudyBase.open(handle, resolve_device(device), checkpoint, str(data_root) if data_root else None)

    def report(row: dict[str, Any]) -> None:
        typer.echo(
            f"band {row['band']:.0%} trial {row['trial']}: MACs −{row['macs_reduction_pct']:.1f}%, "
            f"val {100 * row['val_acc']:.2f}%"
        )

    result = validate_proxies(base, config, tuning, folder, progress=progress, on_candidate=report)
    put_data(handle.engine, handle.study_id, VALIDATION_KEY, json.dumps(result))
    table = [
        {"band": b["band"], "predictor": name, **values}
        for b in result["bands"]
        for name, values in b["predictors"].items()
    ]
    _write_csv(result["rows"], folder / "candidates.csv")
    _write_csv(table, folder / "correlations.csv")
    write_html(proxy_figure(result), folder / "proxy_validation.html")
    default = handle.config["proxy"]
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
    typer.echo(
        f"stored in the study (key '{VALIDATION_KEY}'); wrote {folder}/correlations.csv, candidates.csv, "
        "proxy_validation.html"
    )
