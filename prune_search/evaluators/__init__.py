"""Evaluators: importance, channel selection, proxy fitness, analytic cost, higher fidelity, pruning."""

from prune_search.evaluators.adaptive_bn import AdaptiveBNEvaluator, recalibrate_bn
from prune_search.evaluators.batched import BatchedEvaluator
from prune_search.evaluators.cost import CostModel
from prune_search.evaluators.fitness_table import FitnessTable, measure_fitness_table
from prune_search.evaluators.importance import CRITERIA, Importance, check_criterion, compute_importance
from prune_search.evaluators.materialize import PruningPlan, apply_plan, materialize
from prune_search.evaluators.proxy import IMPORTANCE_PROXIES, PROXIES, TABLE_PROXIES, ProxyEvaluator
from prune_search.evaluators.selection import keep_order, select_channels

__all__ = [
    "CRITERIA",
    "IMPORTANCE_PROXIES",
    "PROXIES",
    "TABLE_PROXIES",
    "AdaptiveBNEvaluator",
    "BatchedEvaluator",
    "CostModel",
    "FitnessTable",
    "Importance",
    "ProxyEvaluator",
    "PruningPlan",
    "apply_plan",
    "check_criterion",
    "compute_importance",
    "keep_order",
    "materialize",
    "measure_fitness_table",
    "recalibrate_bn",
    "select_channels",
]
