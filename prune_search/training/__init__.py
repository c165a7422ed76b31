"""Training loops, checkpoints and the baseline trainer."""

from prune_search.training.baseline import EpochRecord, TrainConfig, TrainResult, train_baseline
from prune_search.training.checkpoint import load_model, read_checkpoint

__all__ = ["EpochRecord", "TrainConfig", "TrainResult", "load_model", "read_checkpoint", "train_baseline"]
