"""Finalizing a trial: prune the base model for real, fine-tune (KD), export, record in the study."""

import json
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from optuna.artifacts import FileSystemArtifactStore
from torch import nn

from prune_search.data import DataSpec
from prune_search.errors import PruneSearchError
from prune_search.finalize.export import PLAN_FILE, export, export_onnx
from prune_search.finalize.tune import FinalizeConfig, fine_tune
from prune_search.search.config import RESULT_ATTR
from prune_search.search.study import StudyHandle, base_checkpoint, open_base
from prune_search.search.study_note import save_dashboard_note
from prune_search.search.summary import load_archive
from prune_search.storage.optuna_tables import attach_artifact, set_finished_user_attrs
from prune_search.storage.study_data import check_writable
from prune_search.storage.url import reported, with_retry
from prune_search.training.fit import EpochRecord
from prune_search.training.loop import evaluate

RUN_FILE = "run.json"
STATE_FILE = "state.pt"
RESULT_FILE = "result.json"


def result_attrs(result: dict[str, Any], prefix: str = RESULT_ATTR) -> dict[str, Any]:
    """``result`` as flat user attrs: ``{"<prefix>.<field>": value}``, nested dicts by dotted names."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat |= result_attrs(value, f"{prefix}.{key}")
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def _check_out(out: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The finished result if ``out`` holds this very run; an error if it holds another one."""
    run_file = out / RUN_FILE
    if run_file.is_file():
        stored = json.loads(run_file.read_text())
        if stored != identity:
            raise PruneSearchError(
                f"{out} holds another run (study {stored.get('study')}, trial {stored.get('trial')}, "
                "other settings); choose another --out"
            )
        if (out / RESULT_FILE).is_file():
            return json.loads((out / RESULT_FILE).read_text())
    elif out.exists() and any(out.iterdir()):
        raise PruneSearchError(f"{out} is not empty and holds no finalize run; choose another --out")
    return None


def writable_folder(path: Path, flag: str) -> None:
    """A one-line error unless ``path`` is a folder this process can write in, or one it can create (its
    nearest existing ancestor is a writable folder). Nothing is left behind."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PruneSearchError(f"cannot make {flag} {path}: {existing} is not a folder; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise PruneSearchError(
            f"cannot write in {existing} for {flag} {path} ({exc.strerror or exc}); choose another {flag} or make "
            "it writable"
        ) from None


def check_can_record(handle: StudyHandle, out: Path, artifact_dir: Path) -> None:
    """Refuse in one line, before anything is fine-tuned or written, a run whose result could not be kept: an
    ``out`` or ``artifact_dir`` that cannot be created or written, or a study storage that refuses writes."""
    writable_folder(out, "--out")
    writable_folder(artifact_dir, "--artifact-dir")
    check_writable(handle.engine, handle.study_id)


def _record(handle: StudyHandle, number: int, result: dict[str, Any], out: Path, artifact_dir: Path) -> None:
    """Store ``result`` with trial ``number``: its user attributes, the plan as an artifact and a dashboard note,
    each database step riding out a short outage (:func:`~prune_search.storage.url.with_retry`)."""
    trial_id = with_retry(
        lambda: handle.storage.get_trial_id_from_study_id_trial_number(handle.study_id, number), handle.engine
    )
    set_finished_user_attrs(handle.engine, trial_id, result_attrs(result))
    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    artifact_id = str(uuid.uuid4())
    with open(out / PLAN_FILE, "rb") as handle_file:
        store.write(artifact_id, handle_file)
    attach_artifact(handle.engine, trial_id, artifact_id, f"trial-{number}-{PLAN_FILE}", "application/json")
    note = (
        f"## Finalized trial {number}\n\n"
        f"| | pruned | base |\n|---|---|---|\n"
        f"| val accuracy | {result['val_acc']:.4f} | {result['base_val_acc']:.4f} |\n"
        f"| test accuracy | {result['test_acc']:.4f} | {result['base_test_acc']:.4f} |\n"
        f"| MACs | {result['macs']:,} (−{result['macs_reduction_pct']:.1f} %) | {result['base_macs']:,} |\n"
        f"| params | {result['params']:,} (−{result['params_reduction_pct']:.1f} %) | {result['base_params']:,} |\n\n"
        f"Fine-tuned {result['epochs']} epochs ({'KD' if result['kd'] else 'CE'}), best epoch {result['best_epoch']}; "
        f"exported to `{out}`."
    )
    save_dashboard_note(handle.study, note, handle.engine, trial_id)


def finalize_trial(
    handle: StudyHandle,
    number: int,
    config: FinalizeConfig,
    out: Path,
    *,
    checkpoint: Path | None = None,
    data_root: str | None = None,
    onnx: bool = False,
    artifact_dir: Path = Path("prune-search-artifacts"),
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> tuple[dict[str, Any], nn.Module | None]:
    """Prune, fine-tune, export and record trial ``number``; resumes a run interrupted in ``out``.

    Returns the result and the fine-tuned model (None when ``out`` already held the finished run).
    """
    config.validate()
    device = torch.device(device)
    base_path = base_checkpoint(handle, checkpoint)  # refused before anything is written
    identity = {"study": handle.study.study_name, "trial": number, "base_sha256": handle.config["checkpoint_sha256"]}
    identity |= asdict(config)
    finished = _check_out(out, identity)
    if finished is not None:
        return finished, None
    check_can_record(handle, out, artifact_dir)  # before hours of fine-tuning whose result could not be kept
    candidate = handle.codec.batch(load_archive(handle).genes_of([number]))
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps(identity))
    data = DataSpec.from_dict(handle.config["data"])  # as stored: the export names no machine's data root
    opened = open_base(handle, base_path, data_root)
    spec, base, bundle = opened.spec, opened.model, opened.bundle
    tuned = fine_tune(
        base,
        handle.space,
        handle.importance,
        candidate,
        bundle,
        config,
        out / STATE_FILE,
        identity=identity,
        device=device,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
    student, plan = tuned.model, tuned.plan
    base_val = evaluate(base, bundle.loader("val", 512), device)
    base_test = evaluate(base, bundle.loader("test", 512), device)
    macs, params = tuned.macs, tuned.params
    base_macs, base_params = handle.config["base"]["macs"], handle.config["base"]["params"]
    result = {
        "trial": number,
        "out": str(out.resolve()),
        "kd": config.kd,
        "epochs": config.epochs,
        "best_epoch": tuned.best_epoch,
        "val_acc": tuned.val_acc,
        "test_acc": tuned.test_acc,
        "base_val_acc": base_val.accuracy,
        "base_test_acc": base_test.accuracy,
        "macs": macs,
        "params": params,
        "base_macs": base_macs,
        "base_params": base_params,
        "macs_reduction_pct": 100.0 * (1 - macs / base_macs),
        "params_reduction_pct": 100.0 * (1 - params / base_params),
        "wall_s": tuned.wall_s,
    }
    if tuned.sparse is not None:
        result["sparse"] = {"asked": config.sparsity} | {k: v for k, v in tuned.sparse.items() if k != "tensors"}
    export(student, plan, spec, {"study": handle.study.study_name, "result": result, "data": data.to_dict()}, out)
    if onnx:
        result["onnx"] = str(export_onnx(student, plan.input_shape, out))
    with reported(handle.url):  # a storage gone meanwhile: one line, and a rerun records the finished run
        _record(handle, number, result, out, artifact_dir)
    (out / RESULT_FILE).write_text(json.dumps(result, indent=1))
    (out / STATE_FILE).unlink(missing_ok=True)
    return result, student.eval()
