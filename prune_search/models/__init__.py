"""The model zoo: CIFAR ResNets, VGG-16-BN, an MLP, torchvision models and user factories."""

from prune_search.models.registry import (
    ModelSpec,
    available_models,
    build_model,
    check_trusted,
    is_named_model,
    resolve_factory,
)

__all__ = ["ModelSpec", "available_models", "build_model", "check_trusted", "is_named_model", "resolve_factory"]
