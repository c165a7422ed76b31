"""``prune-search iterative``: prune-retrain along a schedule, a table per step, the survivor exported.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from prune_search.cli.options import (
    BatchSizeOpt,
    CheckpointDatasetOpt,
    DataRootOpt,
    DeviceOpt,
    ExpectedModelOpt,
    IgnoreLayersOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ModelOptions,
    ProgressOpt,
    load_checkpoint,
    name_list,
    parse_model_options,
    require_empty_folder,
    tuning_config,
)
from prune_search.cli.output import FormatOpt, Output
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CRITERIA, CostModel
from prune_search.finalize.export import export
from prune_search.iterative.loop import DEAD, IterativeConfig, IterativeResult, StepRecord, run_iterative, step_space
from prune_search.iterative.schedule import ScheduleStep, fraction_schedule, geometric_schedule, parse_fractions
from prune_search.search.config import DEFAULTS

STEPS_FILE = "steps.csv"
RESULT_FILE = "result.json"
STATE_FILE = "state.pt"
HEADER = ("step", "t", "status", "keep", "MACs (% base)", "params (% base)", "val pruned", "val retrained", "top class")
ITERATIVE = IterativeConfig()  # the defaults of the stopping rule and the recipe


def _schedule(
    kind: str | None, q: float, fractions: str | None, sizes: dict[str, int], min_keep: int, max_steps: int | None
) -> tuple[dict[str, Any], list[ScheduleStep]]:
    kind = kind or ("fractions" if fractions else "geometric")
    if kind == "geometric":
        if fractions:
            raise PruneSearchError("--fractions belongs to --schedule fractions; drop it or drop --schedule geometric")
        return {"kind": kind, "q": q}, geometric_schedule(sizes, q, min_keep=min_keep, max_steps=max_steps)
    if kind == "fractions":
        if not fractions:
            raise PruneSearchError("--schedule fractions needs --fractions, e.g. --fractions 0.2,0.2,0.2")
        values = parse_fractions(fractions)
        steps = fraction_schedule(sizes, values, min_keep=min_keep)
        return {"kind": kind, "fractions": values}, steps[:max_steps] if max_steps else steps
    raise PruneSearchError(f"--schedule must be geometric or fractions, got '{kind}'")


def _cells(record: StepRecord, base: tuple[int, int]) -> list[str]:
    base_macs, base_params = base
    return [
        str(record.step),
        str(record.t),
        record.status,
        "/".join(str(v) for v in record.keep.values()),
        f"{record.macs:,} ({100 * record.macs / base_macs:.1f}%)",
        f"{record.params:,} ({100 * record.params / base_params:.1f}%)",
        f"{record.pruned_val_acc:.4f}",
        f"{record.val_acc:.4f}",
        f"{record.top_class} ({100 * record.top_class_share:.0f}%)",
    ]


def _line(cells: list[str] | tuple[str, ...]) -> str:
    widths = (4, 3, 15, 17, 22, 20, 10, 13, 9)
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _write_steps(path: Path, result: IterativeResult) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        names = list(result.steps[0].keep) if result.steps else []
        scalar = [k for k in asdict(result.steps[0]) if k != "keep"] if result.steps else []
        writer.writerow(scalar + [f"keep/{name}" for name in names])
        for record in result.steps:
            row = asdict(record)
            writer.writerow([row[k] for k in scalar] + [record.keep[name] for name in names])


def iterative_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Trained base checkpoint from 'train'.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="Empty or new folder for steps.csv, result.json, the model (created if missing)."),
    ],
    model: ExpectedModelOpt = None,
    model_option: ModelOptions = None,
    dataset: CheckpointDatasetOpt = None,
    data_root: DataRootOpt = None,
    schedule: Annotated[
        str | None, typer.Option(help="geometric or fractions (default: fractions when --fractions is given).")
    ] = None,
    q: Annotated[float, typer.Option("--q", help="Geometric retention per step: N(t) = round(size·q^t).")] = 0.8,
    fractions: Annotated[
        str | None, typer.Option(help="Share of the current channels each step removes, e.g. 0.2,0.2,0.2.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Run at most this many schedule steps.")] = None,
    min_keep: Annotated[int, typer.Option(help="Fewest channels a group keeps.")] = DEFAULTS["min_keep"],
    ignore_layers: IgnoreLayersOpt = None,
    epochs_per_step: Annotated[
        int, typer.Option(help="Retraining epochs after each pruning step.")
    ] = ITERATIVE.tuning.epochs,
    max_drop: Annotated[
        float, typer.Option(help="Stop when val accuracy falls more than this many points below the base.")
    ] = ITERATIVE.max_drop,
    criterion: Annotated[
        str, typer.Option(help=f"Importance criterion, of {', '.join(CRITERIA)}; recomputed every step.")
    ] = ITERATIVE.criterion,
    calibration_batches: Annotated[
        int, typer.Option(help="Train batches for importance.")
    ] = ITERATIVE.calibration_batches,
    lr: LrOpt = ITERATIVE.tuning.lr,
    batch_size: BatchSizeOpt = ITERATIVE.tuning.batch_size,
    kd: KdOpt = ITERATIVE.tuning.kd,
    kd_temperature: KdTemperatureOpt = ITERATIVE.tuning.temperature,
    kd_alpha: KdAlphaOpt = ITERATIVE.tuning.alpha,
    seed: Annotated[int, typer.Option(help="Seed of importance and retraining.")] = ITERATIVE.tuning.seed,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    fmt: FormatOpt = "table",
) -> None:
    """Under ``--format json``: what result.json holds; ``csv``: the steps (as steps.csv)."""
    output = Output(fmt)
    tuning = tuning_config(epochs_per_step, lr, batch_size, kd, kd_temperature, kd_alpha, seed)
    config = IterativeConfig(
        tuning,
        max_drop=max_drop,
        criterion=criterion,
        calibration_batches=calibration_batches,
        ignored_layers=tuple(name_list(ignore_layers) or ()),
    )
    config.validate()
    if max_steps is not None and max_steps < 1:
        raise PruneSearchError(f"--max-steps must be at least 1, got {max_steps}")
    require_empty_folder(out)
    options = parse_model_options(model_option) if model else None
    base, spec, data, bundle = load_checkpoint(checkpoint, model, options, dataset, data_root)
    torch_device = resolve_device(device)
    base = base.to(torch_device).eval()
    shape = [1, bundle.in_channels, bundle.image_size, bundle.image_size]
    space = step_space(base, shape, min_keep, config.ignored_layers)
    sizes = {group.name: group.size for group in space.groups}
    described, steps = _schedule(schedule, q, fractions, sizes, min_keep, max_steps)
    if not steps:
        raise PruneSearchError("the schedule prunes nothing (every group is already at --min-keep)")
    out.mkdir(parents=True, exist_ok=True)
    output.note(f"{spec.describe()} on {data.name}: {len(space)} groups ({'/'.join(map(str, sizes.values()))})")
    output.note(_line(HEADER))
    bar = tqdm(total=len(steps), desc="steps", disable=not progress, dynamic_ncols=True)
    base_costs = CostModel(space).base()

    def on_step(record: StepRecord) -> None:
        bar.update(1)
        output.note(_line(_cells(record, base_costs)))
        if record.status == DEAD:
            output.note(
                f"step {record.step}: DEAD NETWORK: it predicts class {record.top_class} for "
                f"{100 * record.top_class_share:.1f} % of val samples (constant-class output); "
                "this step is not a result, stopping"
            )

    result = run_iterative(
        base, space, steps, bundle, config, out / STATE_FILE, device=torch_device, progress=progress, on_step=on_step
    )
    bar.close()
    _write_steps(out / STEPS_FILE, result)
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": spec.to_dict(),
        "data": data.to_dict(),
        "schedule": described | {"planned": [asdict(s) for s in steps]},
        "config": asdict(config),
        "base": {
            "val_acc": result.base_val_acc,
            "test_acc": result.base_test_acc,
            "macs": result.base_macs,
            "params": result.base_params,
        },
        "steps": [asdict(r) for r in result.steps],
        "stop_reason": result.stop_reason,
        "best_step": result.best.step if result.best else None,
        "test_acc": result.test_acc,
        "exported": str(out.resolve()) if result.best else None,
    }
    if result.model is not None and result.plan is not None and result.best is not None:
        info = {"iterative": {"step": asdict(result.best), "test_acc": result.test_acc}, "data": data.to_dict()}
        export(result.model, result.plan, spec, info, out)
    (out / RESULT_FILE).write_text(json.dumps(summary, indent=1))
    output.results(summary, rows=summary["steps"])  # the table: streamed above, a line per step
    reason = {
        "schedule-end": "the schedule ended",
        "below-threshold": f"val accuracy fell more than {max_drop} points below the base",
        "dead": "the network died (constant-class output)",
    }[result.stop_reason]
    if result.best is None:
        output.note(f"stopped at step 1 ({reason}); no step stayed within --max-drop, nothing exported → {out}")
        return
    best = result.best
    output.note(
        f"stopped: {reason}. Kept step {best.step} ({'/'.join(map(str, best.keep.values()))}): "
        f"val acc {best.val_acc:.4f} (base {result.base_val_acc:.4f}), test acc {result.test_acc:.4f} "
        f"(base {result.base_test_acc:.4f}), MACs {best.macs:,} of {result.base_macs:,} → {out}"
    )
