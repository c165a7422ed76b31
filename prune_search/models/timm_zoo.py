"""timm (PyTorch Image Models) classification models as ``timm:NAME``, randomly initialised.

timm is an optional dependency (``pip install 'prune-search[timm]'``) and is imported only when a
``timm:`` model is built. Nothing is ever downloaded or read from disk: the name must be one of
:func:`timm.list_models` (no ``hf-hub:`` or ``local-dir:`` names, no pretrained tags) and the
options that would load weights or configurations are refused.
"""

import difflib
from typing import Any

import torch
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.models.torchvision_zoo import ResizeInput

INSTALL_HINT = "pip install 'prune-search[timm]'"

# timm.create_model keywords that download, read files or change what the model returns; the data sizes come
# from the model spec.
REFUSED_OPTIONS = {
    "pretrained": "weights are always random here",
    "pretrained_cfg": "it can point timm at a download or a file",
    "pretrained_cfg_overlay": "it can point timm at a download or a file",
    "pretrained_strict": "weights are always random here",
    "checkpoint_path": "it reads a file",
    "cache_dir": "it is for downloads",
    "features_only": "the model must return class logits",
    "num_classes": "it comes from the dataset",
    "in_chans": "it comes from the dataset",
}


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise PruneSearchError(f"timm: models need the timm package, which is not installed; {INSTALL_HINT}") from None
    return timm


def timm_names() -> list[str]:
    """Names of timm's models (usable as ``timm:NAME``); a one-line error when timm is missing."""
    return sorted(_timm().list_models())


def _check_name(name: str) -> None:
    names = timm_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(f'timm:{c}' for c in close)}?" if close else "`timm.list_models()` lists them"
    raise PruneSearchError(f"unknown timm model 'timm:{name}'; {hint}")


def _check_options(name: str, options: dict[str, Any]) -> None:
    refused = sorted(set(options) & set(REFUSED_OPTIONS))
    if refused:
        reasons = "; ".join(f"{key}: {REFUSED_OPTIONS[key]}" for key in refused)
        raise PruneSearchError(f"timm:{name} does not take the option {', '.join(refused)} here ({reasons})")


def _runs_at(build: Any, in_channels: int, image_size: int) -> bool:
    """Whether the model that ``build()`` makes maps a ``[1, C, S, S]`` input to logits.

    Tried on PyTorch's meta device (nothing allocated, no arithmetic), so the answer is the same whether the
    model is then built for real or on the meta device (load_pruned's footprint check).
    """
    try:
        with torch.device("meta"):
            model = build().eval()
            with torch.no_grad():
                model(torch.zeros(1, in_channels, image_size, image_size))
    except Exception:  # a size the architecture cannot take, whatever the layer raises
        return False
    return True


def default_input_size(name: str) -> int:
    """timm's default input size of model ``name`` in px (224 where its configuration gives none)."""
    cfg = _timm().models.get_pretrained_cfg(name)
    return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224


def build_timm_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **options: Any) -> nn.Module:
    """A timm model for ``in_channels``×``image_size``² images and ``num_classes`` classes, random weights.

    A model with a fixed input size (ViT, DeiT, Swin, MaxViT, ...) is built for ``image_size`` (timm's
    ``img_size``) where the architecture can take it; otherwise, and for any model that cannot take inputs as
    small as ``image_size``, inputs are resized to timm's default input size first (:class:`ResizeInput`).
    """
    timm = _timm()
    _check_name(name)
    _check_options(name, options)
    cfg = timm.models.get_pretrained_cfg(name)
    default_size = default_input_size(name)
    fixed = bool(cfg is not None and cfg.fixed_input_size)

    def build(**extra: Any) -> nn.Module:
        kwargs = {"num_classes": num_classes, "in_chans": in_channels, **options, **extra}
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, ValueError, AssertionError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise PruneSearchError(f"timm:{name} rejected the model options {options}: {reason}") from None

    if fixed:
        chosen = options.get("img_size")
        if (
            chosen is None
            and image_size != default_size
            and _runs_at(lambda: build(img_size=image_size), in_channels, image_size)
        ):
            return build(img_size=image_size)
        target = chosen if type(chosen) is int else default_size if chosen is None else image_size
        model = build()
        return model if image_size == target else ResizeInput(model, target)
    if image_size < default_size and not _runs_at(build, in_channels, image_size):
        return ResizeInput(build(), default_size)
    return build()
