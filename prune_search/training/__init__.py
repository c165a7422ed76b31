"""Training loops, checkpoints and the baseline trainer."""

from prune_search.training.baseline import TrainConfig, TrainResult, train_baseline
from prune_search.training.checkpoint import load_model, read_checkpoint
from prune_search.training.fit import EpochRecord, Recipe, fit

__all__ = [
    "EpochRecord",
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "fit",
    "load_model",
    "read_checkpoint",
    "train_baseline",
]
