"""Choosing the torch device: CUDA when present, else CPU, unless the user names one."""

import torch

from prune_search.errors import PruneSearchError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → ``cuda`` if available, else ``mps`` if available, else ``cpu``; other names as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PruneSearchError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PruneSearchError(f"device '{name}' asked for but no CUDA GPU is available; use --device cpu")
    return device
