"""What the evidence runs share: the study's base model and dataset, and a candidate's genes."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_search.data import DatasetBundle
from prune_search.errors import PruneSearchError
from prune_search.finalize.tune import FinalizeConfig, Tuned, fine_tune
from prune_search.search.study import StudyHandle, open_base
from prune_search.space import CandidateBatch

RESULT_FILE = "result.json"
STATE_FILE = "state.pt"


@dataclass
class Bench:
    """Where candidates of a study are fine-tuned side by side: the study's base model (eval mode,
    on ``device``, see :func:`~prune_search.search.study.open_base`) and its dataset with the study's splits."""

    handle: StudyHandle
    model: nn.Module
    bundle: DatasetBundle
    device: torch.device

    @classmethod
    def open(
        cls, handle: StudyHandle, device: torch.device, checkpoint: Path | None = None, data_root: str | None = None
    ) -> "Bench":
        base = open_base(handle, checkpoint, data_root)
        return cls(handle, base.model.to(device), base.bundle, device)

    def tune(
        self, candidate: CandidateBatch, config: FinalizeConfig, folder: Path, tag: dict[str, Any], progress: bool
    ) -> dict[str, Any]:
        """Fine-tune ``candidate`` in ``folder`` (resumed if interrupted, skipped if finished): its metrics.

        ``tag`` (plain data) names the run; a folder holding a run with another tag or
        another candidate is an error, never overwritten.
        """
        identity = {
            "study": self.handle.study.study_name,
            "base_sha256": self.handle.config["checkpoint_sha256"],
            "keep": candidate.keep[0].tolist(),
            "strategy": candidate.strategy[0].tolist(),
            **tag,
            **config.__dict__,
        }
        result_file = folder / RESULT_FILE
        if result_file.is_file():
            stored = json.loads(result_file.read_text())
            if stored["identity"] != identity:
                raise PruneSearchError(f"{folder} holds another fine-tuning run; choose another --out")
            return stored["metrics"]
        folder.mkdir(parents=True, exist_ok=True)
        tuned: Tuned = fine_tune(
            self.model,
            self.handle.space,
            self.handle.importance,
            candidate,
            self.bundle,
            config,
            folder / STATE_FILE,
            identity=identity,
            device=self.device,
            progress=progress,
        )
        metrics = tuned.metrics()
        result_file.write_text(json.dumps({"identity": identity, "metrics": metrics}, indent=1))
        (folder / STATE_FILE).unlink(missing_ok=True)
        return metrics
