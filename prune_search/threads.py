"""Torch's CPU intra-op threads, picked for the model at hand (torch is imported on use: the CLI reads
the constants here without it)."""

import os
from typing import TYPE_CHECKING

from prune_search.errors import PruneSearchError

if TYPE_CHECKING:
    import torch


THREADS_ENV = "PRUNE_SEARCH_THREADS"
SMALL_MACS = 50_000_000  # per sample; below it torch's intra-op threads only add overhead on a busy CPU


def requested_threads() -> int | None:
    """Intra-op threads the user asked for (``--threads`` / ``$PRUNE_SEARCH_THREADS``), None when not asked."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise PruneSearchError(f"--threads (or ${THREADS_ENV}) must be a whole number of at least 1, got '{text}'")
    return int(text)


def pick_threads(macs_per_sample: int) -> int:
    """Torch's intra-op threads for a model of ``macs_per_sample`` MACs on CPU.

    An explicit request wins; a user's ``OMP_NUM_THREADS`` is left to torch; otherwise small models
    (below :data:`SMALL_MACS`, e.g. ResNet-20 on 8×8 digits at 2.6 M) get one thread: each of their ops
    is too small to split, and on a busy 2-core CPU torch's default made training steps 15–45× slower.
    """
    requested = requested_threads()
    if requested is not None:
        return requested
    if os.environ.get("OMP_NUM_THREADS") or macs_per_sample >= SMALL_MACS:
        import torch

        return torch.get_num_threads()
    return 1


def set_threads_for(model: "torch.nn.Module", example: "torch.Tensor") -> int:
    """Set torch's intra-op threads for running ``model`` on CPU (see :func:`pick_threads`); returns them.

    ``example``: one input batch ``[N, C, H, W]`` on the model's device; MACs are counted on its first sample.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if example.device.type != "cpu":
        return torch.get_num_threads()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(example[:1])
    threads = pick_threads(counter.get_total_flops() // 2)
    torch.set_num_threads(threads)
    return threads
