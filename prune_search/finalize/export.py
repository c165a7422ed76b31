"""The exported pruned model: plan + state_dict (+ ONNX), and loading it back without the search."""

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.materialize import PruningPlan, apply_plan
from prune_search.models import ModelSpec, build_model

PLAN_FILE = "plan.json"
WEIGHTS_FILE = "weights.pt"
MODEL_FILE = "model.json"
ONNX_FILE = "model.onnx"


def export(model: nn.Module, plan: PruningPlan, spec: ModelSpec, info: dict[str, Any], out: Path) -> None:
    """Write ``plan.json``, ``weights.pt`` (state_dict, ``weights_only`` loadable) and ``model.json``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / PLAN_FILE).write_text(plan.to_json())
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    (out / MODEL_FILE).write_text(json.dumps({"model": spec.to_dict(), **info}, indent=1))


def export_onnx(model: nn.Module, input_shape: list[int], out: Path) -> Path:
    """Export ``model`` (eval mode, CPU) to ``out/model.onnx`` with a dynamic batch dimension."""
    path = out / ONNX_FILE
    example = torch.zeros(input_shape)
    model = model.cpu().eval()
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    except ImportError as exc:
        raise PruneSearchError(f"ONNX export needs the onnx extra ({exc}); pip install 'prune-search[onnx]'") from None
    return path


def load_pruned(directory: str | Path, *, trusted_factory: str | None = None) -> nn.Module:
    """The fine-tuned pruned model exported by ``prune-search finalize`` to ``directory``, in eval mode.

    Builds the base architecture from ``model.json``, replays ``plan.json`` on it and loads
    ``weights.pt`` with ``torch.load(weights_only=True)`` (no pickled code is run). A
    ``package.module:factory`` architecture is built only if it is ``trusted_factory``.
    """
    folder = Path(directory)
    missing = [name for name in (PLAN_FILE, WEIGHTS_FILE, MODEL_FILE) if not (folder / name).is_file()]
    if missing:
        raise PruneSearchError(f"{folder} is not an exported prune-search model (missing {', '.join(missing)})")
    try:
        spec = ModelSpec.from_dict(json.loads((folder / MODEL_FILE).read_text()).get("model"))
    except (json.JSONDecodeError, AttributeError):
        raise PruneSearchError(f"{folder / MODEL_FILE} is not a prune-search model description") from None
    base = build_model(spec, trusted_factory=trusted_factory, source=str(folder / MODEL_FILE))
    model = apply_plan(base, PruningPlan.from_json((folder / PLAN_FILE).read_text()))
    model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    return model.eval()
