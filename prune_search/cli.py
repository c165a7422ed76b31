"""The ``prune-search`` command line."""

import csv
import io
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import optuna
import optuna_dashboard
import typer
from optuna.artifacts import FileSystemArtifactStore
from tqdm import tqdm

from prune_search.cli_options import (
    BatchSizeOpt,
    DataRootOpt,
    DatasetOpt,
    DeviceOpt,
    DownloadOpt,
    ExpectedModelOpt,
    FormatOpt,
    ImageSizeOpt,
    JsonOpt,
    KdAlphaOpt,
    KdOpt,
    KdTemperatureOpt,
    LrOpt,
    ModelOpt,
    ModelOptions,
    ProgressOpt,
    SplitSeedOpt,
    StorageOpt,
    StudyOpt,
    TuneSeedOpt,
    ValFractionOpt,
    data_spec,
    parse_model_options,
    print_epoch,
    quiet_optuna,
)
from prune_search.data import DataSpec, available_datasets, load_dataset
from prune_search.device import resolve_device
from prune_search.elastic.command import elastic_command
from prune_search.errors import PruneSearchError
from prune_search.evidence.command import compare_command, validate_proxy_command
from prune_search.finalize import FinalizeConfig, choose, finalize_trial
from prune_search.finalize.rerank import RERANKED, kl_rerank
from prune_search.finalize.rerank import bn_rerank as bn_rerank_rows
from prune_search.iterative.command import iterative_command
from prune_search.models import ModelSpec, available_models
from prune_search.report import write_report
from prune_search.search import GenerationReport, StartOptions, create_or_join, open_study, run_worker
from prune_search.search.config import CONFIG_ATTR
from prune_search.search.fidelity import multi_fidelity
from prune_search.search.study import base_checkpoint, load_study_base, open_storage
from prune_search.search.study_note import update_study_note
from prune_search.search.summary import front_rows, spread, status
from prune_search.sensitivity.command import sensitivity_command
from prune_search.sparse.command import sparsify_command
from prune_search.storage import redact, resolve_url
from prune_search.storage.trial_records import claim
from prune_search.storage.url import require_existing
from prune_search.training import TrainConfig, load_model, read_checkpoint, train_baseline
from prune_search.training.loop import evaluate

NOTE_EVERY = 10  # generations between refreshes of the study's dashboard note

app = typer.Typer(
    help="Multi-objective search for structured pruning of neural networks, on Optuna.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (best epoch on val).")],
    model: ModelOpt = "resnet20",
    model_option: ModelOptions = None,
    dataset: DatasetOpt = "digits",
    data_root: DataRootOpt = None,
    val_fraction: ValFractionOpt = 0.1,
    split_seed: SplitSeedOpt = 0,
    image_size: ImageSizeOpt = None,
    download: DownloadOpt = False,
    epochs: Annotated[int, typer.Option(help="Epochs; the cosine schedule spans exactly these.")] = 30,
    batch_size: BatchSizeOpt = 128,
    lr: LrOpt = 0.1,
    momentum: Annotated[float, typer.Option(help="SGD (Nesterov) momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 5e-4,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling and augmentation.")] = 0,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run writing --out.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out and its state.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Train a baseline model: SGD + cosine, best epoch on val, test reported once."""
    config = TrainConfig(
        model=model,
        model_options=parse_model_options(model_option),
        data=data_spec(dataset, data_root, val_fraction, split_seed, image_size),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
    )
    result = train_baseline(
        config,
        out,
        resume=resume,
        overwrite=overwrite,
        device=device,
        download=download,
        progress=progress,
        on_epoch_end=print_epoch,
    )
    typer.echo(
        f"{result.model_spec.describe()} on {dataset}: best epoch {result.best_epoch}/{epochs}, "
        f"val acc {result.val_acc:.4f}, test acc {result.test_acc:.4f}, {result.wall_s:.1f}s → {out}"
    )


@app.command("evaluate")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="A model checkpoint from 'train'.")],
    model: ExpectedModelOpt = None,
    model_option: ModelOptions = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset (default: the checkpoint's).")] = None,
    data_root: DataRootOpt = None,
    split: Annotated[str, typer.Option(help="val or test.")] = "val",
    download: DownloadOpt = False,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Accuracy and loss of a checkpoint on the val (or test) split."""
    if split not in ("val", "test"):
        raise PruneSearchError(f"--split must be val or test, got '{split}'")
    stored = read_checkpoint(checkpoint)
    data = DataSpec.from_dict(stored["data"])
    data = replace(data, name=dataset or data.name, root=str(data_root) if data_root else data.root)
    bundle = load_dataset(data, download=download)
    stored_spec = ModelSpec.from_dict(stored["model"])
    name, options = (model, parse_model_options(model_option)) if model else (stored_spec.name, stored_spec.options)
    wanted = ModelSpec(name, bundle.in_channels, bundle.num_classes, bundle.image_size, options)
    net, _ = load_model(checkpoint, wanted, trusted_factory=model)
    torch_device = resolve_device(device)
    metrics = evaluate(net.to(torch_device), bundle.loader(split, 512), torch_device)
    result = {
        "checkpoint": str(checkpoint),
        "dataset": data.name,
        "split": split,
        "accuracy": metrics.accuracy,
        "loss": metrics.loss,
        "samples": metrics.samples,
    }
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(
            f"{checkpoint} on {data.name} {split}: accuracy {metrics.accuracy:.4f}, "
            f"loss {metrics.loss:.4f} ({metrics.samples} samples)"
        )


def _row_cells(row: dict[str, Any], proxy: str, measured: bool) -> list[str]:
    keep = " ".join(str(v) for v in row["keep"].values())
    strategy = "".join("m" if v == "min" else "d" for v in row["strategy"].values())
    scores = [f"{row['measured']['kl']:.4g}", f"{100 * row['measured']['accuracy']:.1f}"] if measured else []
    return [
        str(row["trial"]),
        f"{row['macs']:,} ({row['macs_pct']:.1f}%)",
        f"{row['params']:,} ({row['params_pct']:.1f}%)",
        f"{row[f'proxy_{proxy}']:.4g}",
        *scores,
        keep,
        strategy,
    ]


def _print_front(rows: list[dict[str, Any]], proxy: str) -> None:
    """The rows as a table; a measured front (multi-fidelity study) adds the whole-candidate KL and accuracy."""
    measured = bool(rows) and all("measured" in row for row in rows)
    scores = ["measured KL", "train acc % (BN re-estimated)"] if measured else []
    headers = [
        "trial",
        "MACs (% base)",
        "params (% base)",
        proxy,
        *scores,
        "keep per group",
        "strategy (m=min d=median)",
    ]
    cells = [headers] + [_row_cells(row, proxy, measured) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    for line in cells:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@app.command()
def start(
    study: StudyOpt,
    storage: StorageOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base model (new study; default resnet20); joining a package.module:factory study, name it."),
    ] = None,
    model_option: ModelOptions = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Trained base checkpoint (default: cached baseline).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset (new study; default digits).")] = None,
    data_root: DataRootOpt = None,
    trials: Annotated[int, typer.Option(help="Run until the study holds this many COMPLETE trials.")] = 2000,
    population: Annotated[int | None, typer.Option(help="NSGA-II population size (default 100).")] = None,
    objectives: Annotated[
        str | None, typer.Option(help="Comma-separated, of proxy, macs, params (default all three).")
    ] = None,
    max_macs: Annotated[str | None, typer.Option(help="MACs budget: absolute (2.5M) or % of the base (50%).")] = None,
    max_params: Annotated[str | None, typer.Option(help="Params budget: absolute (100k) or % of the base.")] = None,
    criterion: Annotated[str | None, typer.Option(help="Importance criterion (default taylor).")] = None,
    proxy: Annotated[
        str | None,
        typer.Option(
            help="Proxy objective: bn_kl (default) or bn_loss, measured one group at a time; taylor_loss or "
            "retained_fraction, from importance alone."
        ),
    ] = None,
    evaluations: Annotated[
        int | None,
        typer.Option(
            help="Whole-candidate evaluations (BN-recalibrated KL on the train sample) the study may spend on "
            "promoted front candidates; they correct the proxy and rank the front (default 0: proxy only; "
            "see the README for when it helps)."
        ),
    ] = None,
    calibration_batches: Annotated[int | None, typer.Option(help="Train batches for importance (default 8).")] = None,
    min_ratio: Annotated[float | None, typer.Option(help="Smallest keep ratio (default 0.1).")] = None,
    ratio_step: Annotated[float | None, typer.Option(help="Keep-ratio grid step (default 0.05).")] = None,
    round_to: Annotated[int | None, typer.Option(help="Round keep counts to multiples of this (default 1).")] = None,
    min_keep: Annotated[int | None, typer.Option(help="Fewest channels a group keeps (default 1).")] = None,
    sensitivity: Annotated[
        Path | None, typer.Option(help="A 'sensitivity' output folder or its sensitivity.json (new study).")
    ] = None,
    sensitivity_use: Annotated[
        str | None, typer.Option(help="seed: allocation in generation 0 (default); bound: it floors each group.")
    ] = None,
    seed: Annotated[int, typer.Option(help="This worker's seed (mixed with its ordinal in the study).")] = 0,
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    """Create or join a study and run NSGA-II until it holds --trials COMPLETE trials."""
    quiet_optuna()
    if trials < 1:
        raise PruneSearchError(f"--trials must be at least 1, got {trials}")
    url = resolve_url(storage)
    options = StartOptions(
        model=model,
        model_options=parse_model_options(model_option) if model_option else None,
        checkpoint=checkpoint,
        dataset=dataset,
        data_root=str(data_root) if data_root else None,
        population=population,
        objectives=[o.strip() for o in objectives.split(",")] if objectives else None,
        max_macs=max_macs,
        max_params=max_params,
        criterion=criterion,
        proxy=proxy,
        evaluations=evaluations,
        calibration_batches=calibration_batches,
        min_ratio=min_ratio,
        ratio_step=ratio_step,
        round_to=round_to,
        min_keep=min_keep,
        sensitivity=sensitivity,
        sensitivity_use=sensitivity_use,
    )
    handle, created = create_or_join(url, study, options, device=device, progress=progress)
    verb = "created" if created else "joined"
    typer.echo(f"{verb} study '{study}' in {redact(url)}: {len(handle.space)} groups, {handle.config['model']['name']}")
    bar = tqdm(total=trials, desc="trials", disable=not progress, dynamic_ncols=True)

    measured = [0]

    def report(update: GenerationReport) -> None:
        bar.n = update.complete
        measured[0] += update.measured
        extra = {"measured": measured[0]} if handle.config.get("evaluations") else {}
        bar.set_postfix(front=update.front, hv=f"{update.hypervolume:.4f}", gen=update.generation, **extra)
        if update.generation % NOTE_EVERY == 0:
            update_study_note(handle)

    added = run_worker(
        handle,
        trials,
        seed=seed,
        device=resolve_device(device),
        on_generation=report,
        checkpoint=checkpoint,
        data_root=str(data_root) if data_root else None,
    )
    bar.close()
    update_study_note(handle)
    rows = front_rows(handle)
    typer.echo(f"this worker added {added} trials; the study's feasible front holds {len(rows)} trials:")
    _print_front(spread(rows, 15), handle.config["proxy"])
    typer.echo(f"all of it: prune-search front --study {study} --storage '{redact(url)}'")
    typer.echo(
        f"in the browser: prune-search dashboard --study {study} --storage '{redact(url)}' "
        f"(or optuna-dashboard '{redact(url)}' --artifact-dir prune-search-artifacts)"
    )


@app.command()
def front(study: StudyOpt, storage: StorageOpt = None, fmt: FormatOpt = "table") -> None:
    """The study's feasible Pareto trials: keep counts, strategies, MACs, params, proxies."""
    quiet_optuna()
    if fmt not in ("table", "json", "csv"):
        raise PruneSearchError(f"--format must be table, json or csv, got '{fmt}'")
    handle = open_study(resolve_url(storage), study)
    rows = front_rows(handle)
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=1))
    elif fmt == "csv":
        names = handle.space.names
        out = io.StringIO()
        writer = csv.writer(out)
        scalar = [k for k in rows[0] if k not in ("keep", "strategy")] if rows else []
        writer.writerow(scalar + [f"keep/{n}" for n in names] + [f"strategy/{n}" for n in names])
        for row in rows:
            writer.writerow([row[k] for k in scalar] + list(row["keep"].values()) + list(row["strategy"].values()))
        typer.echo(out.getvalue().rstrip())
    else:
        _print_front(rows, handle.config["proxy"])


@app.command("status")
def status_command(study: StudyOpt, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Trials by state, workers seen, hypervolume (pymoo) and its history."""
    quiet_optuna()
    info = status(open_study(resolve_url(storage), study))
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    typer.echo(f"study {info['study']}: objectives {', '.join(info['objectives'])}")
    typer.echo("trials: " + ", ".join(f"{k} {v}" for k, v in sorted(info["trials"].items())))
    typer.echo(
        f"feasible front: {info['front']} trials; hypervolume {info['hypervolume']:.5f} "
        f"(objectives / base model, reference point {info['reference_point']})"
    )
    evaluations = info["evaluations"]
    if evaluations["budget"]:
        typer.echo(
            f"whole-candidate evaluations: {evaluations['measured']} measured, "
            f"{evaluations['claimed'] - evaluations['measured']} in progress, budget {evaluations['budget']}"
        )
    typer.echo("hypervolume history (generation, trials, hypervolume):")
    for item in spread(info["history"], 10):
        typer.echo(f"  {item['generation']:5d} {item['trials']:7d} {item['hypervolume']:.5f}")
    typer.echo(f"workers seen: {len(info['workers'])}")
    for worker in info["workers"]:
        typer.echo(
            f"  #{worker['worker_id']} {worker['host']} pid {worker['pid']}: {worker['trials']} trials, "
            f"last seen {worker['last_seen']} UTC"
        )


@app.command()
def finalize(
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help="Output folder (with --front K: one sub-folder per trial).")],
    storage: StorageOpt = None,
    trial: Annotated[int | None, typer.Option(help="Trial number to finalize.")] = None,
    knee: Annotated[bool, typer.Option("--knee", help="The front trial closest to the utopia point.")] = False,
    max_macs: Annotated[str | None, typer.Option(help="Pick among the front trials within this MACs budget.")] = None,
    max_params: Annotated[str | None, typer.Option(help="... and within this params budget.")] = None,
    bn_rerank: Annotated[
        bool | None,
        typer.Option(
            "--bn-rerank/--no-bn-rerank",
            help="With a budget: the best of its 16 largest front trials by val accuracy after BN recalibration, "
            "or the best score (default: on; in a study with --evaluations the least whole-candidate KL of the 16 "
            "largest candidates of the corrected front).",
        ),
    ] = None,
    front: Annotated[int | None, typer.Option(help="Finalize K front trials spread across MACs.")] = None,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 15,
    lr: LrOpt = 0.01,
    batch_size: BatchSizeOpt = 128,
    kd_temperature: KdTemperatureOpt = 4.0,
    kd_alpha: KdAlphaOpt = 0.9,
    kd: KdOpt = True,
    seed: TuneSeedOpt = 0,
    sparsity: Annotated[
        float, typer.Option(help="Also zero this share of each Conv/Linear weight (magnitude masks, held).")
    ] = 0.0,
    onnx: Annotated[bool, typer.Option("--onnx", help="Also export model.onnx.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Finalize a trial that is not on the front.")] = False,
    model: ExpectedModelOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out (also automatic).")] = False,
    checkpoint: Annotated[Path | None, typer.Option(help="Path of the study's base checkpoint here.")] = None,
    data_root: DataRootOpt = None,
    artifact_dir: Annotated[Path, typer.Option(help="Optuna artifact store folder.")] = Path("prune-search-artifacts"),
    device: DeviceOpt = "auto",
    progress: ProgressOpt = True,
) -> None:
    """Prune a front trial for real, fine-tune it (KD), export it and record the result in the study."""
    quiet_optuna()
    config = FinalizeConfig(
        epochs, lr, batch_size, kd=kd, temperature=kd_temperature, alpha=kd_alpha, seed=seed, sparsity=sparsity
    )
    config.validate()
    url = resolve_url(storage)
    handle = open_study(url, study, model=model)
    torch_device = resolve_device(device)

    def rerank(fitting: list[dict[str, Any]]) -> dict[str, Any]:
        model, bundle = load_study_base(
            handle, base_checkpoint(handle, checkpoint), str(data_root) if data_root else None
        )
        shown = min(len(fitting), RERANKED)
        if multi_fidelity(handle) and bn_rerank is None:
            row, kl = kl_rerank(handle, fitting, model.to(torch_device), bundle, torch_device)
            typer.echo(
                f"trial {row['trial']}: the least whole-candidate KL ({kl:.4f} nats) of the {shown} candidates of the "
                "corrected front with the most MACs within the budget (--no-bn-rerank: the best measured)"
            )
            return row
        row, accuracy = bn_rerank_rows(handle, fitting, model.to(torch_device), bundle, torch_device)
        typer.echo(
            f"trial {row['trial']}: the best by val accuracy after BN recalibration ({100 * accuracy:.2f}%) of the "
            f"{shown} front trials with the most MACs within the budget (--no-bn-rerank: the best score)"
        )
        return row

    numbers, notes = choose(
        handle,
        trial=trial,
        use_knee=knee,
        max_macs=max_macs,
        max_params=max_params,
        front=front,
        force=force,
        rerank=None if bn_rerank is False else rerank,
    )
    for note in notes:
        typer.echo(f"warning: {note}", err=True)
    if resume and not (out / "run.json").is_file() and front is None:
        raise PruneSearchError(f"nothing to resume in {out}; drop --resume to start")
    for number in numbers:
        target = out / f"trial-{number}" if front is not None else out
        if front is not None and not claim(handle.engine, handle.study_id, number, str(target.resolve())):
            typer.echo(f"trial {number}: taken by another finalize worker, skipped")
            continue
        result, _ = finalize_trial(
            handle,
            number,
            config,
            target,
            checkpoint=checkpoint,
            data_root=str(data_root) if data_root else None,
            onnx=onnx,
            artifact_dir=artifact_dir,
            device=torch_device,
            progress=progress,
            on_epoch_end=print_epoch,
        )
        typer.echo(
            f"trial {number}: val acc {result['val_acc']:.4f} (base {result['base_val_acc']:.4f}), "
            f"test acc {result['test_acc']:.4f} (base {result['base_test_acc']:.4f}), "
            f"MACs −{result['macs_reduction_pct']:.1f}%, params −{result['params_reduction_pct']:.1f}% → {target}"
        )


@app.command()
def report(
    study: StudyOpt,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    storage: StorageOpt = None,
) -> None:
    """Write a self-contained HTML report: fronts, hypervolume, keep ratios, importance, finalized models."""
    quiet_optuna()
    path = write_report(open_study(resolve_url(storage), study), out)
    typer.echo(f"wrote {path} (opens offline in any browser)")


@app.command()
def dashboard(
    study: StudyOpt,
    storage: StorageOpt = None,
    artifact_dir: Annotated[Path, typer.Option(help="Optuna artifact store folder.")] = Path("prune-search-artifacts"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's storage and artifact store."""
    quiet_optuna()
    url = resolve_url(storage)
    handle = open_study(url, study)
    typer.echo(f"optuna-dashboard for '{study}' at http://{host}:{port}/dashboard/studies/{handle.study_id}")
    optuna_dashboard.run_server(url, host=host, port=port, artifact_store=FileSystemArtifactStore(str(artifact_dir)))


@app.command()
def studies(storage: StorageOpt = None) -> None:
    """Studies in the storage, with their trial counts."""
    quiet_optuna()
    url = resolve_url(storage)
    require_existing(url)
    _, rdb = open_storage(url)
    for summary in optuna.get_all_study_summaries(rdb, include_best_trial=False):
        kind = "prune-search" if CONFIG_ATTR in summary.user_attrs else "optuna"
        typer.echo(f"{summary.study_name}\t{summary.n_trials} trials\t{kind}")


@app.command("models")
def models_command() -> None:
    """List the model zoo."""
    for name in available_models():
        typer.echo(name)
    typer.echo("tv:<name>  (any torchvision classification model, random init)")
    typer.echo("package.module:factory  (your own model)")


@app.command("datasets")
def datasets_command() -> None:
    """List the datasets."""
    for name in available_datasets():
        typer.echo(name)


# Commands of the method modules (sensitivity, iterative, sparse, elastic, baselines, validate-proxy)
# are registered here, one line each.
app.command("iterative")(iterative_command)
app.command("sparsify")(sparsify_command)
app.command("compare")(compare_command)
app.command("validate-proxy")(validate_proxy_command)
app.command("sensitivity")(sensitivity_command)
app.command("elastic")(elastic_command)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit status 2."""
    try:
        app()
    except PruneSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
