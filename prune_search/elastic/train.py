"""Per-level fine-tuning with the smaller levels' weights frozen exactly.

Level 0 trains every weight. Level ℓ > 0 trains only the entries of the shared weights that
level ℓ − 1 does not use (its new channels: new output rows, new input columns, and the cross
blocks ``W[new_out, old_in]`` and ``W[old_out, new_in]``), plus its own BatchNorm layers and
classifier. The frozen entries are not merely given zero gradients: every shared weight is
re-parametrised as ``where(new, X, core)`` with ``core`` a constant copy, so whatever SGD's
weight decay and momentum do to the trainable tensor ``X``, the weight the network uses holds
the core values bit for bit.
"""

from collections.abc import Callable
from dataclasses import asdict
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from prune_search.data import DatasetBundle
from prune_search.elastic.model import ElasticModel
from prune_search.evaluators import recalibrate_bn
from prune_search.finalize import FinalizeConfig
from prune_search.finalize.tune import train_network
from prune_search.training.fit import EpochRecord, FitResult


class KeepCore(nn.Module):
    """``where(new, X, core)``: the entries outside ``new`` always read the constant ``core``."""

    def __init__(self, core: Tensor, new: Tensor) -> None:
        super().__init__()
        self.register_buffer("core", core, persistent=False)
        self.register_buffer("new", new, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.where(self.new, x, self.core)


def freeze_core(net: nn.Module, elastic: ElasticModel, level: int) -> list[tuple[nn.Module, str]]:
    """Re-parametrise ``net`` (level ``level``'s sub-network) so level ``level - 1``'s entries stay fixed.

    Returns the (module, parameter name) pairs to release with :func:`release_core`.
    """
    modules = dict(net.named_modules())
    frozen = []
    for key, parameter in list(net.named_parameters()):
        core = elastic.core_mask(level, key, parameter.shape).to(parameter.device)
        if not bool(core.any()):
            continue
        owner, _, name = key.rpartition(".")
        module = modules[owner]
        parametrize.register_parametrization(module, name, KeepCore(parameter.detach().clone(), ~core))
        frozen.append((module, name))
    return frozen


def release_core(frozen: list[tuple[nn.Module, str]]) -> None:
    """Turn the re-parametrised weights back into plain parameters holding their effective values."""
    for module, name in frozen:
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def fine_tune_level(
    elastic: ElasticModel,
    level: int,
    bundle: DatasetBundle,
    config: FinalizeConfig,
    state_file: Path,
    *,
    teacher: nn.Module,
    device: torch.device,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Fine-tune level ``level`` by ``config`` (KD from ``teacher``, the base model) and store it.

    The best epoch on val is stored into ``elastic``; the smaller levels are untouched.
    ``state_file`` holds the per-epoch state while training and is removed afterwards.
    """
    config.validate()
    net = elastic.sub_network(level).to(device)
    frozen = freeze_core(net, elastic, level)
    identity = {"elastic_level": level, "trial": elastic.levels[level].trial, **asdict(config)}
    fitted = train_network(
        net,
        bundle,
        config,
        state_file,
        teacher=teacher,
        identity=identity,
        resume=False,
        device=device,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
    release_core(frozen)
    elastic.store_level(level, net.state_dict())
    state_file.unlink(missing_ok=True)
    return fitted


def fine_tune_levels(
    elastic: ElasticModel,
    bundle: DatasetBundle,
    config: FinalizeConfig,
    work_dir: Path,
    *,
    teacher: nn.Module,
    device: torch.device,
    progress: bool = True,
    on_level_start: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> list[FitResult]:
    """Fine-tune every level, smallest first; level ℓ > 0 starts its own BatchNorm layers and
    classifier from level ℓ − 1's fine-tuned ones (its new channels from the base model's)."""
    results = []
    for level in range(len(elastic.levels)):
        if on_level_start is not None:
            on_level_start(level)
        if level > 0:
            elastic.inherit(level, level - 1)
        state_file = work_dir / f".elastic-level-{level}.state.pt"
        results.append(
            fine_tune_level(
                elastic,
                level,
                bundle,
                config,
                state_file,
                teacher=teacher,
                device=device,
                progress=progress,
                on_epoch_end=on_epoch_end,
            )
        )
    return results


def recalibrate_levels(elastic: ElasticModel, bundle: DatasetBundle, batches: int, device: torch.device) -> None:
    """Re-estimate every level's own BatchNorm statistics on the first ``batches`` train batches
    (128 samples each, unshuffled, no augmentation); the shared weights are untouched."""
    for level in range(len(elastic.levels)):
        net = elastic.sub_network(level).to(device)
        recalibrate_bn(net, islice(bundle.loader("train", 128), batches), device)
        elastic.store_level(level, net.state_dict())
