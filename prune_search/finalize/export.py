"""The exported pruned model: plan + state_dict (+ ONNX), and loading it back without the search."""

import json
import math
import os
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
    weights = model.state_dict()  # replaced in place: its _metadata holds layer versions (MNASNet checks them)
    for name, tensor in weights.items():
        weights[name] = tensor.detach().cpu()
    torch.save(weights, out / WEIGHTS_FILE)
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

    What is read is checked first: a damaged or truncated file, a missing key or a value of the wrong
    type is refused in one line naming the file, and so is a model whose size is absurd (see
    :func:`_check_footprint`), before anything is allocated for it.
    """
    folder = Path(directory)
    missing = [name for name in (PLAN_FILE, WEIGHTS_FILE, MODEL_FILE) if not (folder / name).is_file()]
    if missing:
        raise PruneSearchError(f"{folder} is not an exported prune-search model (missing {', '.join(missing)})")
    model_file, plan_file, weights_file = folder / MODEL_FILE, folder / PLAN_FILE, folder / WEIGHTS_FILE
    described = _read_json(model_file)
    if not isinstance(described, dict) or not isinstance(described.get("model"), dict):
        raise PruneSearchError(
            f"{model_file} is not a prune-search model description (no 'model' entry); export the model again"
        )
    try:
        spec = ModelSpec.from_dict(described["model"])
    except PruneSearchError as exc:
        raise PruneSearchError(f"{model_file} is damaged: {exc}") from None
    sizes = {"in_channels": spec.in_channels, "num_classes": spec.num_classes, "image_size": spec.image_size}
    bad = [f"{key} {value}" for key, value in sizes.items() if value < 1]
    if bad:
        raise PruneSearchError(f"{model_file} is damaged: the model has {', '.join(bad)}; export the model again")
    stored_plan = _read_json(plan_file)
    try:
        plan = PruningPlan.from_dict(stored_plan)
    except PruneSearchError as exc:
        raise PruneSearchError(f"{plan_file}: {exc}; export the model again") from None
    _check_footprint(spec, plan.input_shape, described, model_file, trusted_factory)
    base = build_model(spec, trusted_factory=trusted_factory, source=str(model_file))
    try:
        model = apply_plan(base, plan)
    except PruneSearchError as exc:
        raise PruneSearchError(f"{plan_file} does not fit the model of {model_file}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise PruneSearchError(f"{plan_file} does not fit the model of {model_file} ({reason})") from None
    state = _read_weights(weights_file)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unknown = [key for key in state if key not in expected]
    wrong = [key for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unknown or wrong:
        if missing:
            what = f"{len(missing)} tensors missing, e.g. {missing[0]}"
        elif unknown:
            what = f"{len(unknown)} tensors the model lacks, e.g. {unknown[0]}"
        else:
            what = f"{wrong[0]} is {list(state[wrong[0]].shape)}, the model's {list(expected[wrong[0]].shape)}"
        raise PruneSearchError(
            f"{weights_file} does not fit the model of {MODEL_FILE} and {PLAN_FILE} ({what}); export the model again"
        )
    model.load_state_dict(state)
    return model.eval()


def _read_json(path: Path) -> Any:
    """The parsed JSON of ``path``; a one-line error naming the file if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PruneSearchError(f"cannot read {path} ({exc}); export the model again") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PruneSearchError(
            f"{path} is damaged or truncated: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "export the model again"
        ) from None


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (``weights_only``); a one-line error naming the file if it is damaged."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, I/O error: torch raises many kinds
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise PruneSearchError(f"{path} is damaged or truncated ({reason}); export the model again") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise PruneSearchError(f"{path} is not a state_dict (names to tensors); export the model again")
    return state


# load_pruned builds the unpruned base model, traces one sample through it and prunes it: together that must
# fit in this share of the machine's memory. A model.json or plan.json asking for more (a width multiplier of
# 400, an image of 100,000 px) describes no model this machine can load: the files are damaged or edited.
MEMORY_SHARE = 0.5


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where the system does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def footprint(
    spec: ModelSpec, input_shape: list[int], trusted_factory: str | None = None, source: str = "the model spec"
) -> tuple[int, int] | None:
    """(parameters, bytes) of the base model of ``spec`` with one ``input_shape`` sample traced through it:
    parameters, buffers, the input and every module's output, counted on PyTorch's meta device (nothing is
    allocated). None for a factory that cannot be built or run there (it is then not estimated)."""
    try:
        with torch.device("meta"):
            model = build_model(spec, trusted_factory=trusted_factory, source=source)
    except PruneSearchError:
        raise
    except Exception:  # a user factory doing real work at build time
        return None
    tensors = [*model.parameters(), *model.buffers()]
    params = sum(p.numel() for p in model.parameters())
    total = sum(t.numel() * t.element_size() for t in tensors) + math.prod(input_shape) * 4

    outputs = [0]

    def count(_module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs[0] += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape, device="meta"))
    except Exception:  # an operation without a meta kernel: parameters and buffers alone
        outputs[0] = 0
    finally:
        for hook in hooks:
            hook.remove()
    return params, total + outputs[0]


def _check_footprint(
    spec: ModelSpec, input_shape: list[int], described: dict[str, Any], source: Path, trusted_factory: str | None
) -> None:
    """Refuse, before allocating it, a base model that needs more than :data:`MEMORY_SHARE` of this machine's
    memory, or whose parameter count is not the ``result.base_params`` that ``model.json`` records."""
    counted = footprint(spec, input_shape, trusted_factory, str(source))
    if counted is None:
        return
    params, need = counted
    memory = physical_memory()
    if memory is not None and need > MEMORY_SHARE * memory:
        raise PruneSearchError(
            f"{source} describes an absurd model: {spec.describe()} with a {list(input_shape)} input needs "
            f"{need / 2**30:,.1f} GiB, more than {MEMORY_SHARE:.0%} of this machine's {memory / 2**30:,.1f} GiB; "
            "the file is damaged or edited: export the model again"
        )
    result = described.get("result")
    recorded = result.get("base_params") if isinstance(result, dict) else None
    if type(recorded) is int and recorded != params:
        raise PruneSearchError(
            f"{source} is damaged or edited: its model {spec.describe()} has {params:,} parameters, but the model "
            f"it was exported from had {recorded:,} (result.base_params); export the model again"
        )
