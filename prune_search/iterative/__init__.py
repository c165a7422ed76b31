"""Iterative prune-retrain: retention schedules, the step loop, and its command."""

from prune_search.iterative.loop import IterativeConfig, IterativeResult, StepRecord, run_iterative, top_class_share
from prune_search.iterative.schedule import ScheduleStep, fraction_schedule, geometric_schedule

__all__ = [
    "IterativeConfig",
    "IterativeResult",
    "ScheduleStep",
    "StepRecord",
    "fraction_schedule",
    "geometric_schedule",
    "run_iterative",
    "top_class_share",
]
