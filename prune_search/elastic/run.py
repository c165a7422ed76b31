"""``prune-search elastic`` end to end: trials → nested levels → checkpoint (→ fine-tuning) → table."""

import csv
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from prune_search.data import DataSpec, load_dataset
from prune_search.elastic.build import build_elastic
from prune_search.elastic.checkpoint import CHECKPOINT_FILE, save_elastic
from prune_search.elastic.model import ElasticModel
from prune_search.elastic.nesting import nest, trial_candidates
from prune_search.elastic.train import fine_tune_levels, recalibrate_levels
from prune_search.errors import PruneSearchError
from prune_search.finalize import FinalizeConfig
from prune_search.search.study import StudyHandle, base_checkpoint
from prune_search.training.checkpoint import load_model
from prune_search.training.fit import EpochRecord
from prune_search.training.loop import evaluate

TABLE_FILE = "levels.csv"
COLUMNS = (
    "level",
    "trial",
    "macs",
    "macs_pct",
    "params",
    "params_pct",
    "trial_macs",
    "trial_params",
    "best_epoch",
    "val_acc",
    "test_acc",
)


def make_elastic(
    handle: StudyHandle,
    trials: list[int],
    out: Path,
    *,
    rule: str = "max",
    tuning: FinalizeConfig | None = None,
    bn_batches: int = 0,
    checkpoint: Path | None = None,
    data_root: str | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_notes: Callable[[list[str]], None] | None = None,
    on_level_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> tuple[ElasticModel, list[dict[str, Any]]]:
    """Write ``out/elastic.pt`` and ``out/levels.csv`` for ``trials`` nested by ``rule``.

    With ``bn_batches`` > 0, every level's own BatchNorm statistics are first re-estimated on
    that many train batches. With ``tuning``, every level is then fine-tuned (smallest first,
    smaller levels frozen). With neither, each level is exactly the pruned base model. Returns
    the model and one row per level: exact MACs/params per sample (and % of the base),
    accuracies in [0, 1] (val; test once).
    """
    if tuning is not None:
        tuning.validate()
    if bn_batches < 0:
        raise PruneSearchError(f"--bn-batches must be 0 or more, got {bn_batches}")
    target = out / CHECKPOINT_FILE
    if target.exists():
        raise PruneSearchError(f"{target} already exists; choose another --out or delete it")
    device = torch.device(device)
    base_path = base_checkpoint(handle, checkpoint)
    nested = nest(handle.space, trials, trial_candidates(handle, trials), rule)
    if on_notes is not None:
        on_notes(nested.notes)
    spec = handle.model_spec()
    base, _ = load_model(base_path, spec, trusted_factory=handle.trusted_factory)
    base = base.eval()
    data = DataSpec.from_dict(handle.config["data"])
    bundle = load_dataset(
        DataSpec(data.name, data_root or data.root, data.val_fraction, data.split_seed, data.image_size)
    )
    strategies = nested.candidates.strategy[0].tolist()
    info = {
        "study": handle.study.study_name,
        "base_sha256": handle.config["checkpoint_sha256"],
        "data": data.to_dict(),
        "nest": rule,
        "strategies": {
            name: handle.space.strategies[s] for name, s in zip(handle.space.names, strategies, strict=True)
        },
        "tuning": asdict(tuning) if tuning is not None else None,
        "bn_batches": bn_batches,
        "base_macs": handle.config["base"]["macs"],
        "base_params": handle.config["base"]["params"],
    }
    elastic = build_elastic(
        base, spec, handle.space, handle.importance, nested, info, trusted_factory=handle.trusted_factory
    )
    if bn_batches:
        recalibrate_levels(elastic, bundle, bn_batches, device)
    best_epochs = [0] * len(nested)
    if tuning is not None:
        out.mkdir(parents=True, exist_ok=True)
        fitted = fine_tune_levels(
            elastic,
            bundle,
            tuning,
            out,
            teacher=base.to(device),
            device=device,
            progress=progress,
            on_level_start=on_level_start,
            on_epoch_end=on_epoch_end,
        )
        best_epochs = [result.best_epoch for result in fitted]
    rows = _evaluate(elastic, bundle, device, best_epochs)
    elastic.to("cpu").set_width(len(nested) - 1)
    save_elastic(elastic, target)
    with open(out / TABLE_FILE, "w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return elastic, rows


def _evaluate(elastic: ElasticModel, bundle: Any, device: torch.device, best_epochs: list[int]) -> list[dict[str, Any]]:
    """Val and test accuracy of every level (recorded in the levels' metrics) and the table rows."""
    elastic.to(device)
    base_macs, base_params = elastic.info["base_macs"], elastic.info["base_params"]
    rows = []
    for index, level in enumerate(elastic.levels):
        elastic.set_width(index)
        val = evaluate(elastic, bundle.loader("val", 512), device)
        test = evaluate(elastic, bundle.loader("test", 512), device)
        level.metrics.update(val_acc=val.accuracy, test_acc=test.accuracy, best_epoch=best_epochs[index])
        rows.append(
            {
                "level": index,
                "trial": level.trial,
                "macs": level.macs,
                "macs_pct": round(100.0 * level.macs / base_macs, 2),
                "params": level.params,
                "params_pct": round(100.0 * level.params / base_params, 2),
                "trial_macs": level.trial_macs,
                "trial_params": level.trial_params,
                "best_epoch": best_epochs[index],
                "val_acc": val.accuracy,
                "test_acc": test.accuracy,
            }
        )
    return rows
