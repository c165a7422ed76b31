"""Baselines at a MACs budget, the front-vs-baselines comparison and proxy validation, on digits."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, compute_importance
from prune_search.evidence.context import Bench
from prune_search.evidence.peers import PEERS, peer_candidate
from prune_search.finalize.global_pruning import GlobalPruner, taylor_batches
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.baselines import BASELINES, _global_removed, baseline
from prune_search.storage.study_data import get_data


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits_checkpoint):
    folder = tmp_path_factory.mktemp("evidence")
    url = f"sqlite:///{folder / 'study.db'}"
    options = StartOptions(
        evaluations=0, checkpoint=digits_checkpoint, population=40, calibration_batches=2, ratio_step=0.01
    )
    handle, _ = create_or_join(url, "ev", options, device="cpu", progress=False)
    run_worker(handle, 600)
    return handle, url


@pytest.mark.parametrize("name", BASELINES)
def test_a_baseline_is_a_valid_candidate_with_the_most_macs_within_the_budget(study, name):
    handle, _ = study
    space, cost = handle.space, CostModel(handle.space)
    base_macs = handle.config["base"]["macs"]
    budget = base_macs // 2
    candidate = baseline(space, handle.importance, name, budget)
    space.validate(candidate)
    macs = int(cost(candidate)[0][0])
    assert macs <= budget
    assert macs > 0.4 * base_macs  # it uses the budget, it is not just small
    assert bool((candidate.keep >= space.floor()).all())
    if name == "uniform":
        ratios = candidate.keep[0].double() / space.sizes.double()
        assert float(ratios.max() - ratios.min()) < 0.1  # one ratio, up to rounding of small groups


def test_global_ranking_removes_the_globally_least_important_channels(study):
    handle, _ = study
    space = handle.space
    vectors = handle.importance.vectors(space)
    scores = torch.cat(vectors)
    for window in ("min", "median"):
        keep = _global_removed(space, handle.importance, window)(0.6)
        assert int(space.sizes.sum() - keep.sum()) == round(0.4 * scores.numel())
    keep = _global_removed(space, handle.importance, "min")(0.6)
    removed = torch.cat([v.sort().values[: int(v.numel() - k)] for v, k in zip(vectors, keep, strict=True)])
    kept = torch.cat([v.sort().values[int(v.numel() - k) :] for v, k in zip(vectors, keep, strict=True)])
    assert float(removed.max()) <= float(kept.min())


def test_group_normalised_global_ranking_compares_importance_relative_to_its_group(study):
    handle, _ = study
    space = handle.space
    for normaliser in ("mean", "max"):
        vectors = [v / (v.mean() if normaliser == "mean" else v.max()) for v in handle.importance.vectors(space)]
        keep = _global_removed(space, handle.importance, "min", normaliser)(0.6)
        removed = torch.cat([v.sort().values[: int(v.numel() - k)] for v, k in zip(vectors, keep, strict=True)])
        kept = torch.cat([v.sort().values[int(v.numel() - k) :] for v, k in zip(vectors, keep, strict=True)])
        assert float(removed.max()) <= float(kept.min())
    normalised, raw = (_global_removed(space, handle.importance, "min", n)(0.6) for n in ("mean", None))
    assert not torch.equal(normalised, raw)


def test_torch_pruning_global_widths_become_a_candidate_within_the_budget(study):
    handle, _ = study
    space, base_macs = handle.space, handle.config["base"]["macs"]
    base = Bench.open(handle, torch.device("cpu"))
    magnitude, taylor = (GlobalPruner(space, base.model, taylor_batches(base.bundle), m) for m in PEERS[:2])
    assert torch.equal(magnitude.widths(0.0), space.sizes)
    halved = magnitude.widths(0.5)
    assert int(halved.sum()) < int(space.sizes.sum()) and bool((halved >= 1).all())
    assert not torch.equal(halved, taylor.widths(0.5))
    assert torch.equal(taylor.widths(0.5), taylor.widths(0.5))  # the base model and its gradients stay as they were
    candidate = peer_candidate(base, "tp_global", base_macs // 2)
    space.validate(candidate)
    macs = int(CostModel(space)(candidate)[0][0])
    assert 0.4 * base_macs < macs <= base_macs // 2
    with pytest.raises(PruneSearchError, match="reaches no fewer than"):
        peer_candidate(base, "tp_global", 1000)


def test_an_unmeetable_budget_names_the_smallest_possible(study):
    handle, _ = study
    with pytest.raises(PruneSearchError, match="smallest this space allows"):
        baseline(handle.space, handle.importance, "uniform", 10)


def test_baselines_work_for_other_criteria(study, digits, digits_checkpoint):
    handle, _ = study
    from prune_search.training import load_model

    model, _ = load_model(digits_checkpoint)
    importance = compute_importance(model, handle.space, "l1")
    candidate = baseline(handle.space, importance, "global_median", handle.config["base"]["macs"] // 2)
    assert int(candidate.strategy.unique()) == handle.space.strategies.index("median")


@pytest.mark.slow
def test_compare_fine_tunes_front_and_baselines_with_one_recipe(study, tmp_path):
    _, url = study
    out = tmp_path / "cmp"
    args = ["compare", "--study", "ev", "--storage", url, "--max-macs", "50%", "--epochs", "1"]
    args += ["--methods", "front,uniform", "--seeds", "0,1", "--device", "cpu", "--no-progress"]
    result = run_cli(*args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = _csv(out / "results.csv")
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in ("front", "uniform") for s in "01"}
    assert all(float(r["macs_reduction_pct"]) >= 50 for r in rows)
    assert all(0 < float(r["test_acc"]) <= 1 for r in rows)
    uniform_trial = {r["trial"] for r in rows if r["method"] == "uniform"}
    assert len(uniform_trial) == 1 and uniform_trial != {""}  # stored as a trial of the study
    assert set(json.loads((out / "50pct" / "picks.json").read_text())) == {"front", "uniform"}
    summary = _csv(out / "summary.csv")
    assert len(summary) == 2 and all(r["seeds"] == "2" for r in summary)
    assert (out / "comparison.html").stat().st_size > 100_000  # plotly.js inlined: opens offline
    again = run_cli(*args, "--out", str(out))  # finished runs are read back, not retrained
    assert again.returncode == 0 and "epoch" not in again.stderr
    only = ["compare", "--study", "ev", "--storage", url, "--max-macs", "50%", "--epochs", "1", "--methods", "uniform"]
    narrower = run_cli(*only, "--seeds", "0", "--device", "cpu", "--no-progress", "--out", str(out))
    assert narrower.returncode == 0 and "epoch" not in narrower.stderr
    assert len(_csv(out / "results.csv")) == 4  # a call with fewer methods keeps the earlier runs
    assert {r["method"] for r in _csv(out / "summary.csv")} == {"front", "uniform"}


def test_the_comparison_figure_draws_every_method():
    from prune_search.evidence.compare import METHODS
    from prune_search.evidence.figures import comparison_figure

    summary = [
        {"method": m, "macs_reduction_pct": 50.0 + i, "test_mean": 90.0 + i, "test_std": 0.1}
        for i, m in enumerate(METHODS)
    ]
    figure = comparison_figure(summary, 92.0, "all methods")
    assert [trace.name for trace in figure.data] == list(METHODS)
    assert len({trace.marker.color for trace in figure.data}) == len(METHODS)  # each its own colour


@pytest.mark.slow
def test_compare_rejects_bad_input(study, tmp_path):
    _, url = study
    base = ["compare", "--study", "ev", "--storage", url, "--out", str(tmp_path / "x")]
    assert_one_line_error(run_cli(*base, "--methods", "front,best"), "unknown method", "best")
    assert_one_line_error(run_cli(*base, "--seeds", "a"), "--seeds")
    assert_one_line_error(run_cli(*base, "--max-macs", "0.001%"), "meets the budget", "closest")


@pytest.mark.slow
def test_validate_proxy_reports_correlations_and_stores_them_with_the_study(study, tmp_path):
    handle, url = study
    out = tmp_path / "val"
    args = ["validate-proxy", "--study", "ev", "--storage", url, "--bands", "0.5", "--band-width", "0.2"]
    args += ["--per-band", "4", "--epochs", "1", "--bn-batches", "2", "--val-batches", "1"]
    result = run_cli(*args, "--device", "cpu", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stderr
    stored = json.loads(get_data(handle.engine, handle.study_id, "proxy_validation"))
    assert len(stored["rows"]) == 4
    assert all(40 <= r["macs_reduction_pct"] <= 60 for r in stored["rows"])
    predictors = stored["bands"][0]["predictors"]
    fast = {"taylor_loss", "retained_fraction", "bn_kl", "bn_loss"}
    assert set(predictors) == fast | {"whole_kl", "trained_kl", "bn_accuracy", "params", "uniformity"}
    assert all(-1 <= p["spearman"] <= 1 for p in predictors.values() if p["spearman"] == p["spearman"])
    table = _csv(out / "correlations.csv")
    assert {r["predictor"] for r in table} == set(predictors)
    assert (out / "proxy_validation.html").is_file()
    assert "taylor_loss" in result.stdout and "top-5" in result.stdout
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "proxy_validation.py"
    report = tmp_path / "pv.md"  # the benchmark script on the same --out reads the finished runs back
    done = subprocess.run(
        [sys.executable, str(script), *args[1:], "--out", str(out), "--results", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "prune-search validate-proxy --study ev" in text and "--bn-batches 2" in text
    assert text.count("| 50% |") == 4 and "| taylor_loss | " in text
    assert "seed vs seed" not in text

    first = {path: path.stat().st_mtime_ns for path in (out / "band50").glob("*/*") if path.is_file()}
    again = run_cli(*args, "--repeats", "2", "--device", "cpu", "--no-progress", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert {path: path.stat().st_mtime_ns for path in first} == first  # the first seed's runs are read back
    assert len(list((out / "band50").glob("trial-*-seed1"))) == 4
    repeated = json.loads(get_data(handle.engine, handle.study_id, "proxy_validation"))
    for row in repeated["rows"]:
        assert row["val_acc"] == pytest.approx((row["val_acc_seed0"] + row["val_acc_seed1"]) / 2)
    assert {r["trial"]: r["val_acc_seed0"] for r in repeated["rows"]} == {
        r["trial"]: r["val_acc"] for r in stored["rows"]
    }
    agreement = repeated["bands"][0]["repeatability"]
    assert agreement["repeats"] == 2 and "seed vs seed" in again.stdout
    assert _csv(out / "repeatability.csv")[0]["repeats"] == "2"
    done = subprocess.run(
        [sys.executable, str(script), *args[1:], "--repeats", "2", "--out", str(out), "--results", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "| 50% | 2 |" in report.read_text() and "with 2 seeds each" in report.read_text()


def test_repeatability_of_fine_tuning_and_the_ceiling_it_sets():
    """Seeds that agree perfectly leave the ceiling at 1; disagreeing ones at 0; in between, Spearman–Brown."""
    from scipy import stats

    from prune_search.evidence.proxy_validation import ValidationConfig, repeatability

    ranks = np.arange(10, dtype=np.float64)
    same = repeatability(np.stack([ranks, 2 * ranks, ranks + 1], axis=1))
    assert same == {"repeats": 3, "spearman": pytest.approx(1), "ceiling": pytest.approx(1)}
    assert repeatability(np.stack([ranks, -ranks], axis=1))["ceiling"] == 0
    noisy = np.stack([ranks, ranks[[1, 0, 3, 2, 5, 4, 9, 8, 7, 6]]], axis=1)
    rho = stats.spearmanr(noisy[:, 0], noisy[:, 1]).statistic
    assert 0 < rho < 1
    assert repeatability(noisy) == {
        "repeats": 2,
        "spearman": pytest.approx(rho),
        "ceiling": pytest.approx(np.sqrt(2 * rho / (1 + rho))),
    }
    with pytest.raises(PruneSearchError, match="--repeats must be at least 1"):
        ValidationConfig(repeats=0).validate()


def test_validate_proxy_needs_enough_trials_in_a_band(study, tmp_path):
    _, url = study
    args = ["validate-proxy", "--study", "ev", "--storage", url, "--bands", "0.5", "--band-width", "0.001"]
    assert_one_line_error(run_cli(*args, "--out", str(tmp_path / "v")), "widen --band-width")
    beyond = ["validate-proxy", "--study", "ev", "--storage", url, "--bands", "0.999", "--band-width", "0.001"]
    assert_one_line_error(run_cli(*beyond, "--out", str(tmp_path / "v")), "out of the space's reach", "--min-ratio")
    assert_one_line_error(run_cli("validate-proxy", "--study", "ev", "--storage", url, "--bands", "2"), "--bands")
    zero = ["validate-proxy", "--study", "ev", "--storage", url, "--repeats", "0", "--out", str(tmp_path / "v")]
    assert_one_line_error(run_cli(*zero), "--repeats must be at least 1")


def test_correlations_rank_a_perfect_and_a_reversed_predictor():
    from prune_search.evidence.proxy_validation import correlations

    accuracy = torch.arange(8, dtype=torch.float64).numpy()
    out = correlations({"good": accuracy * 2, "bad": -accuracy}, accuracy)
    assert out["good"]["spearman"] == pytest.approx(1) and out["good"]["best_in_top5"]
    assert out["bad"]["kendall"] == pytest.approx(-1) and not out["bad"]["best_in_top5"]


def test_the_quality_benchmark_keeps_methods_that_share_a_pick_in_one_process():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fmnist_quality.py"
    spec = importlib.util.spec_from_file_location("fmnist_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grid = ["search", "front_trained", "uniform", "tp_global_taylor", "fastnas"]
    assert module.split(grid, 2) == [["search", "front_trained", "uniform"], ["tp_global_taylor", "fastnas"]]
    assert module.split(["search", "uniform", "fastnas"], 2) == [["search", "uniform"], ["fastnas"]]
    assert module.split(["tp_global", "fastnas", "global_mean"], 2) == [["tp_global", "global_mean"], ["fastnas"]]
    assert module.split(grid, 1) == [grid] and module.split(["uniform"], 4) == [["uniform"]]


@pytest.mark.slow
def test_quality_benchmark_smoke_run_on_digits(tmp_path, digits_checkpoint):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "fmnist_quality.py"
    results = tmp_path / "quality.md"
    args = ["--dataset", "digits", "--models", "resnet20", "--budgets", "50%", "--seeds", "0", "--epochs", "1"]
    args += ["--trials", "300", "--checkpoint", f"resnet20={digits_checkpoint}"]
    args += ["--workdir", str(tmp_path / "w"), "--results", str(results)]
    args += ["--methods", "search,front,front_bn,uniform,global_mean", "--evaluations", "6", "--jobs", "2"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    text = results.read_text()
    for method in ("| search |", "| front |", "| front_bn |", "| uniform |", "| global_mean |"):
        assert method in text
    assert "± 0.00" not in text  # one seed has no spread to show
    assert (
        "prune-search compare --study quality-digits-resnet20-bn_kl" in text and "--proxy bn_kl --evaluations 6" in text
    )
    assert results.with_suffix(".svg").read_text().startswith("<?xml")


def test_trained_pick_halves_a_pool_of_front_trials_and_stored_references(study, monkeypatch, tmp_path):
    from prune_search.evidence.compare import candidates_at
    from prune_search.finalize import rerank
    from prune_search.finalize.rerank import REFERENCES, reference_candidate
    from prune_search.search.references import stored_rows
    from prune_search.storage.bulk import complete_trials

    handle, _ = study
    monkeypatch.setattr(rerank, "TRAINED_RUNGS", (2, 6))
    monkeypatch.setattr(rerank, "TRAINED_POOL_BATCHES", 3)
    monkeypatch.setattr(rerank, "HELD_OUT_BATCHES", 2)
    base = Bench.open(handle, torch.device("cpu"))
    budget = int(0.5 * handle.config["base"]["macs"])
    references = torch.cat([reference_candidate(handle, m, budget, base.model, base.bundle).keep for m in REFERENCES])
    held = complete_trials(handle.engine, handle.study_id)
    rungs = []
    original = rerank.trained_rerank

    def recorded(*args, **kwargs):
        return original(*args, **kwargs, on_rung=lambda *r: rungs.append(r))

    monkeypatch.setattr("prune_search.evidence.compare.trained_rerank", recorded)
    picks = tmp_path / "picks.json"
    [entry] = candidates_at(base, "50%", ["front_trained"], picks)
    assert entry["macs"] <= budget and entry["trial"] is not None
    first, last = json.loads(picks.read_text())["front_trained"]["rungs"]
    assert [first["steps"], last["steps"]] == [2, 6] and last["kl"][0][0] == entry["trial"]  # the winner leads
    assert [kl for *_, kl in last["kl"]] == sorted(kl for *_, kl in last["kl"])
    assert {name for _, name, _ in first["kl"]} >= {"front", "uniform"}  # the references are named
    added = complete_trials(handle.engine, handle.study_id) - held
    assert 0 <= added <= len(REFERENCES)  # references not yet in the study became trials
    pool = rungs[0][1]
    assert rungs == [(0, pool, 2), (1, -(-pool // 3), 6)] and pool > len(REFERENCES)
    rows = stored_rows(handle, baseline(handle.space, handle.importance, "uniform", budget), torch.device("cpu"))
    assert complete_trials(handle.engine, handle.study_id) == held + added  # stored once, found again
    assert torch.equal(torch.tensor([list(rows[0]["keep"].values())]), references[:1])
    [searched] = candidates_at(base, "50%", ["search"], picks)  # the default: the same halving, with the margin
    stored = json.loads(picks.read_text())
    assert stored["search"]["rungs"] == stored["front_trained"]["rungs"]
    halvings = len(rungs)
    both = candidates_at(base, "50%", ["front_trained", "search"], tmp_path / "both.json")
    assert len(rungs) == halvings + 2  # one halving (two rungs) serves both methods
    assert [e["trial"] for e in both] == [entry["trial"], searched["trial"]]
    check = stored["search"].get("check")
    if check is None:  # the halving winner is uniform itself
        assert searched["trial"] == entry["trial"] and last["kl"][0][1] == "uniform"
    else:
        assert check["leader"] == entry["trial"] and check["margin"] == rerank.SWITCH_MARGIN
        assert searched["trial"] == (check["incumbent"] if check["kept"] else entry["trial"])


def test_headroom_reads_quality_results_and_sets_the_targets_beside_uniforms_gap(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "headroom.py"
    spec = importlib.util.spec_from_file_location("headroom", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = tmp_path / "q.md"
    rows = [
        ("20%", "search", "91.00 ± 0.10"),
        ("20%", "uniform", "91.20 ± 0.20"),
        ("20%", "tp_global_taylor", "91.50 ± 0.10"),
        ("50%", "search", "92.30"),
    ]
    table = [f"| {b} | {m} | 7 | 80.0 % | 80.0 % | 3 | 92.00 | {t} | | |" for b, m, t in rows]
    results.write_text("\n".join(["# title", "", "### resnet20 (unpruned: val 93.00 %, test 92.20 %)", "", *table]))
    [row] = module.headroom_rows(results)  # 50 % has no uniform row: no gap to show
    assert row["budget"] == "20%" and row["gap"] == pytest.approx(1.0) and row["share"] == pytest.approx(0.5)
    assert row["search"] == pytest.approx(-0.2) and row["best"] == "tp_global_taylor"
    assert row["best_gain"] == pytest.approx(0.3)
    assert module.per_budget([row])["20%"]["best"] == pytest.approx(0.3)
    out = tmp_path / "h.md"
    done = subprocess.run(
        [sys.executable, str(path), str(results), "--results", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "| q.md | resnet20 | 20% | 3 | 92.20 | 91.20 | 1.00 | uniform +0.5 | 50% | -0.20 |" in out.read_text()
    empty = tmp_path / "e.md"
    empty.write_text("# nothing\n")
    refused = subprocess.run([sys.executable, str(path), str(empty)], capture_output=True, text=True)
    assert refused.returncode == 2 and "no model section with a uniform row" in refused.stderr
