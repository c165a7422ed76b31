"""Models found by name, all built through one factory signature.

A factory is called as ``factory(in_channels=C, num_classes=K, image_size=S, **options)``
and returns an ``nn.Module`` mapping ``[B, C, S, S]`` images to ``[B, K]`` logits.

Trust: zoo, ``tv:`` and ``timm:`` names run only code that ships with prune-search, torchvision and timm
(random weights, no downloads), so a spec read from a file or a database row may name them. A
``package.module:factory`` name imports and runs that module, so :func:`build_model` builds it only when the
caller passes the same name as ``trusted_factory`` (what the user typed as ``--model``); every loader goes
through here.
"""

import importlib
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.models.mlp import MLP
from prune_search.models.resnet_cifar import CifarResNet
from prune_search.models.timm_zoo import build_timm_model
from prune_search.models.torchvision_zoo import build_torchvision_model
from prune_search.models.vgg import VGG16BN

ModelFactory = Callable[..., nn.Module]

ZOO: dict[str, ModelFactory] = {
    "resnet20": partial(CifarResNet, 20),
    "resnet32": partial(CifarResNet, 32),
    "resnet56": partial(CifarResNet, 56),
    "resnet110": partial(CifarResNet, 110),
    "vgg16_bn": VGG16BN,
    "mlp": MLP,
}

# Prefixes of names whose code ships with an installed library (torchvision, timm): trusted in stored specs.
NAMED_PREFIXES = ("tv:", "timm:")
_DATA_ARGS = ("in_channels", "num_classes", "image_size")
_NOT_PLAIN = "the stored model spec is not plain data (a name, integer sizes and JSON options); re-create the file"


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, besides ``tv:NAME``, ``timm:NAME`` and ``module:factory``."""
    return list(ZOO)


def is_named_model(name: str) -> bool:
    """Whether ``name`` is a zoo, ``tv:`` or ``timm:`` model: safe to build from a spec stored in a file or a
    database."""
    return name in ZOO or name.startswith(NAMED_PREFIXES)


def _describe_valid() -> str:
    return f"{', '.join(ZOO)}, tv:<torchvision model>, timm:<timm model>, or package.module:factory"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model, as plain data (stored in checkpoints and studies).

    ``name``: a zoo name, ``tv:NAME``, ``timm:NAME`` or ``package.module:factory``. ``image_size`` in px.
    ``options``: extra keyword arguments of the factory (JSON values).
    """

    name: str
    in_channels: int
    num_classes: int
    image_size: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        """The spec stored as ``data``; its options must be plain JSON values (no objects, no tensors)."""
        if not isinstance(data, dict):
            raise PruneSearchError(_NOT_PLAIN)
        sizes = [data.get(key) for key in _DATA_ARGS]
        options = data.get("options", {})
        plain_options = type(options) is dict and _is_json(options)
        if not isinstance(data.get("name"), str) or any(type(size) is not int for size in sizes) or not plain_options:
            raise PruneSearchError(_NOT_PLAIN)
        return cls(data["name"], *sizes, options=dict(options))

    def describe(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
        return (
            f"{self.name}{opts} ({self.in_channels}×{self.image_size}×{self.image_size} in, {self.num_classes} classes)"
        )


def _is_json(value: Any) -> bool:
    """Whether ``value`` is built of None, bool, int, float, str, lists and str-keyed dicts only."""
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) is list:
        return all(_is_json(item) for item in value)
    if type(value) is dict:
        return all(type(key) is str and _is_json(item) for key, item in value.items())
    return False


def check_trusted(spec: ModelSpec, trusted_factory: str | None, source: str) -> None:
    """Refuse, in one line, to build a ``package.module:factory`` the user did not name.

    ``source`` says where the spec was read (e.g. ``"checkpoint base.pt"``); ``trusted_factory``
    is the factory the user named where they run this (``--model``), or None.
    """
    if is_named_model(spec.name) or ":" not in spec.name or spec.name == trusted_factory:
        return
    raise PruneSearchError(
        f"{source} names the model factory '{spec.name}', which would import and run that code; refused: "
        f"if you trust it, pass --model {spec.name} (Python: trusted_factory='{spec.name}')"
    )


def _import_factory(name: str) -> ModelFactory:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise PruneSearchError(f"model '{name}' must look like package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PruneSearchError(
            f"cannot import '{module_name}' for model '{name}' ({exc}); install it or add its folder to PYTHONPATH"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PruneSearchError(f"module '{module_name}' has no callable '{attr}' for model '{name}'")
    return factory


def resolve_factory(name: str) -> ModelFactory:
    """The factory for a model name; raises :class:`PruneSearchError` listing valid names."""
    if name in ZOO:
        return ZOO[name]
    if name.startswith("tv:"):
        return partial(build_torchvision_model, name[3:])
    if name.startswith("timm:"):
        return partial(build_timm_model, name[5:])
    if ":" in name:
        return _import_factory(name)
    raise PruneSearchError(f"unknown model '{name}'; valid models are {_describe_valid()}")


def _accepted(factory: ModelFactory, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _check_options(name: str, factory: ModelFactory, options: dict[str, Any]) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in _DATA_ARGS and params[p].kind is not params[p].VAR_POSITIONAL]
    valid = [p for p in valid if params[p].default is not inspect.Parameter.empty]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise PruneSearchError(
            f"model '{name}' has no option {', '.join(unknown)}; valid options: {', '.join(valid) or 'none'}"
        )


def build_model(spec: ModelSpec, *, trusted_factory: str | None = None, source: str = "the model spec") -> nn.Module:
    """A freshly initialised model for ``spec`` (seed the global RNG first for repeatability).

    A ``package.module:factory`` spec is built only when ``trusted_factory`` names the same
    factory (see :func:`check_trusted`); ``source`` names where the spec came from in the refusal.
    """
    check_trusted(spec, trusted_factory, source)
    factory = resolve_factory(spec.name)
    _check_options(spec.name, factory, spec.options)
    data_args = {
        "in_channels": spec.in_channels,
        "num_classes": spec.num_classes,
        "image_size": spec.image_size,
    }
    try:
        model = factory(**_accepted(factory, data_args), **spec.options)
    except (TypeError, ValueError) as exc:
        raise PruneSearchError(f"cannot build model {spec.describe()}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise PruneSearchError(f"model factory '{spec.name}' returned {type(model).__name__}, not nn.Module")
    return model
