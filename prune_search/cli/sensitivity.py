"""``prune-search sensitivity``: scan every group, allocate keep ratios, write CSV/JSON/HTML.

Help texts: ``prune_search.cli.app.COMMANDS`` (``prune-search --help`` lists them without importing this module).
"""

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from tqdm import tqdm

from prune_search.cli.options import (
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    IgnoreLayersOpt,
    ModelOpt,
    ModelOptions,
    ProgressOpt,
    name_list,
    parse_model_options,
    root_text,
)
from prune_search.cli.output import FormatOpt, Output, echo_table
from prune_search.device import resolve_device
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CRITERIA, AdaptiveBNEvaluator, CostModel, check_criterion
from prune_search.evaluators.adaptive_bn import accuracy
from prune_search.search.config import DEFAULTS, StartOptions, sha256_of, versions
from prune_search.search.study import BaseModel, base_importance, load_base
from prune_search.sensitivity.allocate import allocate
from prune_search.sensitivity.figure import write_figure
from prune_search.sensitivity.result import SensitivityResult
from prune_search.sensitivity.scan import STRATEGY, min_candidate, parse_ratios, scan_groups
from prune_search.space import SpaceOptions

BATCH_SIZE = 128
VAL_BATCH_SIZE = 512
SCAN_RATIOS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
BN_BATCHES = 8  # train batches re-estimating the BN statistics before scoring
MAX_DROP = 1.0  # allowed val-accuracy drop per group, in points
_SPACE = SpaceOptions()


def _allocation(
    evaluator: AdaptiveBNEvaluator, ratios: dict[str, float], max_drop: float, base_acc: float
) -> dict[str, Any]:
    """The allocated candidate: its keep counts, exact MACs/params and val accuracy (same procedure as the scan)."""
    space = evaluator.space
    wanted = torch.tensor([[ratios[name] for name in space.names]], dtype=torch.float64)
    keep = space.keep_counts(wanted)[0]
    candidate = min_candidate(space, keep)
    cost = CostModel(space)
    macs, params = (int(t[0]) for t in cost(candidate))
    base_macs, base_params = cost.base()
    val_acc = float(evaluator(candidate)[0])
    return {
        "max_drop": max_drop,
        "ratios": ratios,
        "keep": dict(zip(space.names, keep.tolist(), strict=True)),
        "macs": macs,
        "params": params,
        "base_macs": base_macs,
        "base_params": base_params,
        "macs_reduction_pct": round(100 * (1 - macs / base_macs), 3),
        "params_reduction_pct": round(100 * (1 - params / base_params), 3),
        "val_acc": val_acc,
        "drop_pts": 100 * (base_acc - val_acc),
    }


def _config(base: BaseModel, options: StartOptions, evaluator: AdaptiveBNEvaluator, ratios: list[float]) -> dict:
    """How the scan was made, stored with it."""
    return {
        "model": base.spec.to_dict(),
        "data": base.data.to_dict(),
        "checkpoint": str(base.checkpoint),
        "checkpoint_sha256": sha256_of(base.checkpoint),
        "criterion": options.criterion,
        "calibration_batches": options.calibration_batches,
        "strategy": STRATEGY,
        "ratios": ratios,
        "recalibrate_bn": evaluator.recalibrate,
        "bn_batches": len(evaluator.calibration) if evaluator.recalibrate else 0,
        "split": "val",
        "val_samples": sum(len(targets) for _, targets in evaluator.validation),
        "checkpoint_val_acc": accuracy(base.model, evaluator.validation, evaluator.device),
        "space": asdict(base.space.options),
        "ignored_layers": sorted(set(options.ignored_layers or [])),
        "versions": versions(),
    }


def _print_summary(result: SensitivityResult) -> None:
    ratios, allocation, config = result.config["ratios"], result.allocation, result.config
    drops = {(row.group, row.ratio): row.drop_pts for row in result.rows}
    lines = [["group", "size", *(f"{r:g}" for r in ratios), "allocated"]]
    for group, size in result.groups.items():
        chosen = f"{allocation['ratios'][group]:g} ({allocation['keep'][group]}/{size})"
        lines.append([group, str(size), *(f"{drops[group, r]:.2f}" for r in ratios), chosen])
    typer.echo("val-accuracy drop in points with one group at each keep ratio (others full):")
    echo_table(lines, right=True)
    how = f"BN recalibrated on {config['bn_batches']} train batches" if config["recalibrate_bn"] else "no BN recal"
    typer.echo(f"base val accuracy {100 * result.base_val_acc:.2f}% ({config['val_samples']} val samples, {how})")
    typer.echo(
        f"allocation (each group's drop ≤ {allocation['max_drop']:g} pts): "
        f"MACs {allocation['macs']:,} of {allocation['base_macs']:,} (−{allocation['macs_reduction_pct']:.1f}%), "
        f"params {allocation['params']:,} of {allocation['base_params']:,} "
        f"(−{allocation['params_reduction_pct']:.1f}%), val accuracy {100 * allocation['val_acc']:.2f}% "
        f"(drop {allocation['drop_pts']:.2f} pts, all groups pruned together)"
    )


def sensitivity_command(
    model: ModelOpt = DEFAULTS["model"],
    model_option: ModelOptions = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Trained base checkpoint (default: cached baseline).")] = None,
    dataset: DatasetOpt = DEFAULTS["dataset"],
    data_root: DataRootOpt = None,
    criterion: Annotated[
        str, typer.Option(help=f"Importance criterion choosing the kept channels, of {', '.join(CRITERIA)}.")
    ] = DEFAULTS["criterion"],
    calibration_batches: Annotated[int, typer.Option(help="Train batches for importance.")] = DEFAULTS[
        "calibration_batches"
    ],
    ratios: Annotated[str, typer.Option(help="Keep ratios to scan, comma-separated.")] = SCAN_RATIOS,
    recalibrate_bn: Annotated[
        bool, typer.Option("--recalibrate-bn/--no-recalibrate-bn", help="Re-estimate BN statistics before scoring.")
    ] = True,
    bn_batches: Annotated[int, typer.Option(help=f"Train batches of {BATCH_SIZE} for BN recalibration.")] = BN_BATCHES,
    max_drop: Annotated[
        float, typer.Option(help="Allowed val-accuracy drop per group, in percentage points.")
    ] = MAX_DROP,
    min_ratio: Annotated[float, typer.Option(help="Smallest keep ratio of the grid (as in start).")] = _SPACE.min_ratio,
    ratio_step: Annotated[float, typer.Option(help="Keep-ratio grid step (as in start).")] = _SPACE.ratio_step,
    round_to: Annotated[
        int, typer.Option(help="Round keep counts to multiples of this (as in start).")
    ] = _SPACE.round_to,
    min_keep: Annotated[int, typer.Option(help="Fewest channels a group keeps (as in start).")] = _SPACE.min_keep,
    ignore_layers: IgnoreLayersOpt = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for sensitivity.csv/.json/.html (created if missing).")
    ] = Path("sensitivity"),
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
    fmt: FormatOpt = "table",
) -> None:
    """Under ``--format json``: what sensitivity.json holds; ``csv``: the scan (as sensitivity.csv)."""
    output = Output(fmt)
    check_criterion(criterion)
    if max_drop < 0:
        raise PruneSearchError(f"--max-drop is an allowed accuracy drop in points, at least 0; got {max_drop:g}")
    if bn_batches < 1 or calibration_batches < 1:
        raise PruneSearchError("--bn-batches and --calibration-batches must be at least 1")
    space_options = SpaceOptions(min_ratio, ratio_step, round_to, min_keep)
    space_options.validate()
    scanned = parse_ratios(ratios, space_options)
    torch_device = resolve_device(device)
    options = StartOptions(
        model=model,
        model_options=parse_model_options(model_option),
        checkpoint=checkpoint,
        dataset=dataset,
        data_root=root_text(data_root),
        criterion=criterion,
        calibration_batches=calibration_batches,
        min_ratio=min_ratio,
        ratio_step=ratio_step,
        round_to=round_to,
        min_keep=min_keep,
        ignored_layers=name_list(ignore_layers),
    )
    base = load_base(options, torch_device, progress)
    importance = base_importance(base, options, torch_device)
    train = base.bundle.loader("train", BATCH_SIZE)
    calibration = [batch for _, batch in zip(range(bn_batches), train, strict=False)]
    validation = list(base.bundle.loader("val", VAL_BATCH_SIZE))
    evaluator = AdaptiveBNEvaluator(
        base.model, base.space, importance, calibration, validation, torch_device, recalibrate=recalibrate_bn
    )
    steps = len(base.space) * len(scanned) + 1
    with tqdm(total=steps, desc="sensitivity", disable=not progress, dynamic_ncols=True) as bar:
        base_acc, rows = scan_groups(evaluator, scanned, on_step=lambda: bar.update(1))
    allocation = _allocation(evaluator, allocate(rows, max_drop), max_drop, base_acc)
    groups = dict(zip(base.space.names, base.space.sizes.tolist(), strict=True))
    result = SensitivityResult(_config(base, options, evaluator, scanned), base_acc, groups, rows, allocation)
    result.write(out)
    write_figure(result, out)
    output.results(result.to_dict(), lambda: _print_summary(result), rows=[asdict(row) for row in result.rows])
    output.note(f"wrote sensitivity.csv, sensitivity.json and sensitivity.html in {out}")
    same = f" --ignore-layers {','.join(result.config['ignored_layers'])}" if result.config["ignored_layers"] else ""
    output.note(
        f"use it in a study: prune-search start --study NAME ...{same} --sensitivity {out} --sensitivity-use seed|bound"
    )
