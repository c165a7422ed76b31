"""The search's front against simple pruning at equal MACs, each fine-tuned with the same recipe.

At every MACs budget the compared candidates are: ``search``, what ``finalize --max-macs`` picks
by default (``--pick auto``: in a multi-fidelity study the least whole-candidate KL of the 16 candidates of the
corrected front with the most MACs within the budget; else the method :data:`PICK_METHOD` names); ``front``, the
best-scored feasible front trial within the budget (the least measured KL of the measured front in a
multi-fidelity study, else the best proxy; ``--pick best``); ``front_bn``, of the 16 front trials within the
budget with the most MACs, the best by val accuracy after BN recalibration (8 train batches, 4 val batches of
128; ``--pick bn``); ``front_kl``, of the same 16, the least whole-candidate KL to the unpruned model on the
train-split fitness sample; ``front_trained``, the winner of successive halving by short KD fine-tunes over the same
16 and the uniform and global baselines at the budget, stored as trials (``--pick trained --margin 0``; ``search``
is ``--pick trained`` with the default :data:`SWITCH_MARGIN`); the baselines of
:mod:`prune_search.search.baselines` and the peers' widths of :mod:`prune_search.evidence.peers`, each
with the most MACs within the same budget. Each is fine-tuned with one :class:`FinalizeConfig` per seed; the
baselines' and peers' candidates are stored as trials of the study (``finalize --trial N --force`` exports one).
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prune_search.errors import PruneSearchError
from prune_search.evidence.context import Bench
from prune_search.evidence.peers import PEERS, peer_candidate
from prune_search.finalize.rerank import (
    SWITCH_MARGIN,
    TrainedPick,
    bn_rerank,
    kl_rerank,
    pick_method,
    reference_rows,
    trained_rerank,
)
from prune_search.finalize.select import fitting_rows, within_budget
from prune_search.finalize.tune import FinalizeConfig
from prune_search.search.baselines import BASELINES, baseline
from prune_search.search.config import parse_budget
from prune_search.search.fidelity import multi_fidelity
from prune_search.search.references import stored_rows
from prune_search.search.runner import Scorer
from prune_search.search.summary import front_rows
from prune_search.space import CandidateBatch

METHODS = ("search", "front", "front_bn", "front_kl", "front_trained", *BASELINES, *PEERS)
PICKS_FILE = "picks.json"  # per budget: the candidate each method picked, read back by later calls
PICK_METHOD = {"trained": "front_trained", "bn": "front_bn", "best": "front", "kl": None}  # finalize's --pick


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise PruneSearchError(f"unknown method {unknown or '(none)'}; methods are {', '.join(METHODS)}")
    return methods


def candidates_at(base: Bench, budget: str, methods: list[str], picks: Path | None = None) -> list[dict[str, Any]]:
    """One entry per method: ``method``, ``trial`` (front only), ``candidate``, MACs, params, proxies.

    ``picks``: a JSON file of the candidates the methods picked at this budget, read back for the methods it
    holds (a trained pick costs minutes) and written with the others."""
    handle = base.handle
    macs_budget = parse_budget(budget, handle.config["base"]["macs"], "--max-macs")
    rows = front_rows(handle)
    if not rows:
        raise PruneSearchError("the study has no feasible front yet; run 'prune-search start' first")
    scorer = Scorer(handle, base.device)
    out = []
    stored = json.loads(picks.read_text()) if picks is not None and picks.is_file() else {}
    halving: dict[str, TrainedPick] = {}  # one trained pick serves both search and front_trained
    for method in methods:
        if method in stored:
            candidate = CandidateBatch(*(torch.tensor([stored[method][k]]) for k in ("keep", "strategy")))
            trial = stored[method]["trial"]
        else:
            candidate, trial, seen = _candidate(base, method, budget, macs_budget, rows, halving)
            stored[method] = {"keep": candidate.keep[0].tolist(), "strategy": candidate.strategy[0].tolist()}
            stored[method] |= {"trial": trial, **seen}
            if picks is not None:  # merged with what another call at this budget wrote meanwhile
                picks.parent.mkdir(parents=True, exist_ok=True)
                merged = json.loads(picks.read_text()) if picks.is_file() else {}
                picks.write_text(json.dumps(merged | {method: stored[method]}, indent=1))
        if trial is None:  # a baseline's or a peer's widths: a trial of the study too, to finalize and export
            trial = stored_rows(handle, candidate, base.device)[0]["trial"]
        on_device = candidate.to(base.device)
        proxies = {f"proxy_{name}": float(scorer.proxy(on_device, name)[0]) for name in scorer.proxy.available}
        macs, params = (int(t[0]) for t in scorer.cost(on_device))
        out.append(
            {"method": method, "trial": trial, "candidate": candidate, "macs": macs, "params": params, **proxies}
        )
    return out


def _candidate(
    base: Bench,
    method: str,
    budget: str,
    macs_budget: int,
    rows: list[dict[str, Any]],
    halving: dict[str, TrainedPick],
) -> tuple[CandidateBatch, int | None, dict[str, Any]]:
    """The candidate ``method`` picks at ``budget`` (``macs_budget`` MACs), its trial number (None off the
    study) and what the pick saw, for the picks file: a trained pick's ``rungs``, each rung's KL after its KD
    steps as ``[trial, "front" or the reference's name, KL]`` best first. ``rows`` is the study's front."""
    handle = base.handle
    codec = handle.codec
    if method == "search":
        default = PICK_METHOD[pick_method("auto", handle)]
        if default == "front_trained":
            return _trained(base, budget, rows, SWITCH_MARGIN, halving)
        if default is not None:
            return _candidate(base, default, budget, macs_budget, rows, halving)
        fitting = fitting_rows(handle, front_rows(handle, corrected=True), budget, None)
        row, _ = kl_rerank(handle, fitting, base.model, base.bundle, base.device)
        return codec.from_rows([row]), row["trial"], {}
    if method == "front":
        row = within_budget(handle, rows, budget, None)
        return codec.from_rows([row]), row["trial"], {}
    if method in ("front_bn", "front_kl"):
        rerank = bn_rerank if method == "front_bn" else kl_rerank
        row, _ = rerank(handle, fitting_rows(handle, rows, budget, None), base.model, base.bundle, base.device)
        return codec.from_rows([row]), row["trial"], {}
    if method == "front_trained":
        return _trained(base, budget, rows, 0.0, halving)
    if method in PEERS:
        return peer_candidate(base, method, macs_budget), None, {}
    return baseline(handle.space, handle.importance, method, macs_budget), None, {}


def _trained(
    base: Bench, budget: str, rows: list[dict[str, Any]], margin: float, halving: dict[str, TrainedPick]
) -> tuple[CandidateBatch, int, dict[str, Any]]:
    """The trained pick at ``budget`` over the front ``rows``: with :data:`SWITCH_MARGIN` (``search``) or the
    halving winner (``margin`` 0, ``front_trained``), as :func:`_candidate` returns it, with every rung's
    standings and the margin check for the picks file. ``halving`` holds the one successive halving run for
    both."""
    handle = base.handle
    if "pick" not in halving:
        pool = front_rows(handle, corrected=True) if multi_fidelity(handle) else rows
        fitting = fitting_rows(handle, pool, budget, None)  # first: a budget no front trial meets is refused
        references = reference_rows(handle, budget, None, base.model, base.bundle, base.device)
        halving["pick"] = trained_rerank(handle, fitting, base.model, base.bundle, base.device, references)
    pick = halving["pick"]
    row, check = pick.row, pick.check
    if margin == 0:
        row = pick.winner
        check = None if check is None else check | {"margin": 0.0, "kept": False}
    seen = {"rungs": pick.labelled_rungs()} | ({"check": check} if check is not None else {})
    return handle.codec.from_rows([row]), row["trial"], seen


def run_comparison(
    base: Bench,
    budgets: list[str],
    methods: list[str],
    seeds: list[int],
    config: FinalizeConfig,
    out: Path,
    *,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune every method's candidate at every budget for every seed; one row per run.

    Runs live in ``out/<budget>/<method>/seed<S>`` and are resumed or skipped when rerun; a
    method whose candidate another method at the same budget already picked reuses that run.
    """
    base_costs = base.handle.config["base"]
    rows = []
    for budget in budgets:
        trained: dict[tuple, dict[str, Any]] = {}
        at = out / budget.replace("%", "pct")
        for entry in candidates_at(base, budget, methods, at / PICKS_FILE):
            genes = (tuple(entry["candidate"].keep[0].tolist()), tuple(entry["candidate"].strategy[0].tolist()))
            for seed in seeds:
                folder = at / entry["method"] / f"seed{seed}"
                tag = {"method": entry["method"], "budget": budget}
                if (genes, seed) not in trained:
                    trained[genes, seed] = base.tune(entry["candidate"], _seeded(config, seed), folder, tag, progress)
                metrics = trained[genes, seed]
                row = {
                    "budget": budget,
                    "method": entry["method"],
                    "trial": entry["trial"],
                    "seed": seed,
                    "macs_reduction_pct": 100.0 * (1 - entry["macs"] / base_costs["macs"]),
                    "params_reduction_pct": 100.0 * (1 - entry["params"] / base_costs["params"]),
                    **{k: v for k, v in entry.items() if k not in ("method", "trial", "candidate")},
                    **metrics,
                }
                rows.append(row)
                if on_result is not None:
                    on_result(row)
    return rows


def _seeded(config: FinalizeConfig, seed: int) -> FinalizeConfig:
    return FinalizeConfig(**{**config.__dict__, "seed": seed})


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std (0 for one seed) of val/test accuracy per (budget, method), in points."""
    out = []
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    keys = sorted({(r["budget"], r["method"]) for r in rows}, key=lambda k: (budgets.index(k[0]), METHODS.index(k[1])))
    for budget, method in keys:
        group = [r for r in rows if r["budget"] == budget and r["method"] == method]
        val = 100 * np.array([r["val_acc"] for r in group])
        test = 100 * np.array([r["test_acc"] for r in group])
        ddof = 1 if len(group) > 1 else 0
        out.append(
            {
                "budget": budget,
                "method": method,
                "trial": group[0]["trial"],
                "seeds": len(group),
                "macs": group[0]["macs"],
                "params": group[0]["params"],
                "macs_reduction_pct": group[0]["macs_reduction_pct"],
                "params_reduction_pct": group[0]["params_reduction_pct"],
                "val_mean": float(val.mean()),
                "val_std": float(val.std(ddof=ddof)),
                "test_mean": float(test.mean()),
                "test_std": float(test.std(ddof=ddof)),
            }
        )
    return out
