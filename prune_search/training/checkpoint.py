"""Checkpoint files: plain data + tensors, written atomically, read with ``weights_only=True``.

A checkpoint is a dict with ``format`` (one of :data:`KINDS`), ``version``, the model spec and
data spec as plain dicts, and tensors (state_dicts). Nothing in it is a pickled object, so
``torch.load(path, weights_only=True)`` reads it without running code.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_search.data import DataSpec
from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model

VERSION = 1
MODEL = "prune-search/model"
TRAIN_STATE = "prune-search/train-state"
KINDS = (MODEL, TRAIN_STATE)


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save({**payload, "version": VERSION}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint(path: Path, kind: str = MODEL) -> dict[str, Any]:
    """The checkpoint at ``path``, checked to be of ``kind``; one-line errors otherwise."""
    if not path.is_file():
        raise PruneSearchError(f"checkpoint {path} does not exist; train one with 'prune-search train --out {path}'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PruneSearchError(
            f"{path} is not a readable prune-search checkpoint (truncated or another format: {reason[:120]}); "
            "re-create it with 'prune-search train'"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in KINDS:
        raise PruneSearchError(f"{path} is not a prune-search checkpoint; re-create it with 'prune-search train'")
    if payload["format"] != kind:
        raise PruneSearchError(f"{path} holds a {payload['format']} file, but a {kind} file is needed here")
    if payload.get("version") != VERSION:
        raise PruneSearchError(
            f"{path} has checkpoint version {payload.get('version')}; this prune-search reads {VERSION}"
        )
    return payload


def model_payload(
    model_spec: ModelSpec, data_spec: DataSpec, state_dict: dict[str, torch.Tensor], **extra: Any
) -> dict[str, Any]:
    """A model checkpoint: specs as plain data, the state_dict, and any extra plain data."""
    return {
        "format": MODEL,
        "model": model_spec.to_dict(),
        "data": data_spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }


def check_compatible(path: Path, stored: ModelSpec, wanted: ModelSpec) -> None:
    """Fail with a one-line error when a checkpoint's model is not the one the run asks for."""
    if stored.name != wanted.name or stored.options != wanted.options:
        problem = f"architecture {stored.describe()} vs {wanted.describe()}"
    elif stored.num_classes != wanted.num_classes:
        problem = f"{stored.num_classes} classes vs {wanted.num_classes}"
    elif (stored.in_channels, stored.image_size) != (wanted.in_channels, wanted.image_size):
        problem = f"input {stored.in_channels}×{stored.image_size}px vs {wanted.in_channels}×{wanted.image_size}px"
    else:
        return
    raise PruneSearchError(
        f"checkpoint {path} does not fit this run ({problem}); "
        "pass the checkpoint trained for this model and dataset, or the matching --model/--dataset"
    )


def load_model(
    path: Path, wanted: ModelSpec | None = None, *, trusted_factory: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model stored at ``path`` (built from its spec, weights loaded) and the payload.

    With ``wanted``, the stored spec must match it (architecture, options, classes, input).
    A stored ``package.module:factory`` is built only if it is ``trusted_factory`` (the user's
    ``--model``); see :func:`prune_search.models.check_trusted`.
    """
    payload = read_checkpoint(path, MODEL)
    stored = ModelSpec.from_dict(payload["model"])
    if wanted is not None:
        check_compatible(path, stored, wanted)
    model = build_model(stored, trusted_factory=trusted_factory, source=f"checkpoint {path}")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PruneSearchError(
            f"weights in {path} do not fit {stored.describe()} ({first}); "
            "the model code changed since training: retrain or restore that code"
        ) from None
    return model, payload
