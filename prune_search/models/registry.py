"""Models found by name, all built through one factory signature.

A factory is called as ``factory(in_channels=C, num_classes=K, image_size=S, **options)``
and returns an ``nn.Module`` mapping ``[B, C, S, S]`` images to ``[B, K]`` logits.
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

_DATA_ARGS = ("in_channels", "num_classes", "image_size")


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, besides ``tv:NAME`` and ``module:factory``."""
    return list(ZOO)


def _describe_valid() -> str:
    return f"{', '.join(ZOO)}, tv:<torchvision model>, or package.module:factory"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model, as plain data (stored in checkpoints and studies).

    ``name``: a zoo name, ``tv:NAME`` or ``package.module:factory``. ``image_size`` in px.
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
        return cls(
            name=str(data["name"]),
            in_channels=int(data["in_channels"]),
            num_classes=int(data["num_classes"]),
            image_size=int(data["image_size"]),
            options=dict(data.get("options", {})),
        )

    def describe(self) -> str:
        opts = "".join(f" {k}={v}" for k, v in sorted(self.options.items()))
        return (
            f"{self.name}{opts} ({self.in_channels}×{self.image_size}×{self.image_size} in, {self.num_classes} classes)"
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


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model for ``spec`` (seed the global RNG first for repeatability)."""
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
