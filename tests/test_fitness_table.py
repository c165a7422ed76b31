"""The measured fitness table: one group pruned at a time, BN statistics of the scored batch, table lookups."""

from dataclasses import replace

import numpy as np
import optuna
import pytest
import torch

from prune_search.errors import PruneSearchError
from prune_search.evaluators import (
    AdaptiveBNEvaluator,
    FitnessTable,
    ProxyEvaluator,
    compute_importance,
    measure_fitness_table,
)
from prune_search.evaluators.fitness_table import measured_counts, single_group_candidates
from prune_search.search import StartOptions, create_or_join, open_study, run_worker
from prune_search.search.config import FITNESS_KEY
from prune_search.search.summary import front_rows
from prune_search.space import CandidateBatch, PruningSpace
from prune_search.storage.study_data import get_data
from prune_search.training import load_model


@pytest.fixture(scope="module")
def measured(digits_checkpoint, digits):
    """A trained resnet20 on digits, its space (ratio step 0.1), importance, evaluator and table (4 levels)."""
    model, _ = load_model(digits_checkpoint)
    model.eval()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 8, 8), ratio_step=0.1)
    importance = compute_importance(model, space, "taylor", batches=digits.loader("train", 128), max_batches=2)
    batches = [next(iter(digits.loader("train", 128, shuffle=True, seed=5)))]
    evaluator = AdaptiveBNEvaluator(model, space, importance, [], batches, batch_statistics=True)
    table = measure_fitness_table(evaluator, 4, {"batches": 1})
    return space, importance, evaluator, table


def test_each_entry_is_the_measured_increase_with_only_that_group_pruned(measured):
    space, _, evaluator, table = measured
    assert [len(c) for c in table.counts] == [min(4, len(c)) for c in measured_counts(space, 100)]
    base = evaluator.measure(space.full())
    g, s, k = 3, 1, table.counts[3][0]
    scores = evaluator.measure(single_group_candidates(space, [(g, s, k)]))
    assert table.values["kl"][g][s][0] == pytest.approx(float(scores["kl"][0] - base["kl"][0]), abs=1e-12)
    assert table.values["loss"][g][s][0] == pytest.approx(float(scores["loss"][0] - base["loss"][0]), abs=1e-12)
    smallest = [values[0] for values in table.values["kl"][0]]
    assert all(v > 0.01 for v in smallest), "pruning a group to its floor must cost something measurable"


def test_measured_counts_respect_each_groups_floor(measured):
    space = measured[0]
    bounded = PruningSpace(space.structure, replace(space.options, group_min_ratio={space.names[0]: 0.5}))
    counts = measured_counts(bounded, 9)
    assert min(counts[0]) >= int(bounded.floor()[0]) > int(space.floor()[0])
    assert counts[1:] == measured_counts(space, 9)[1:]


def test_bn_kl_of_a_candidate_is_the_sum_of_its_groups_entries(measured):
    space, importance, _, table = measured
    proxy = ProxyEvaluator(space, importance, fitness=table)
    assert proxy.available == ("taylor_loss", "retained_fraction", "bn_kl", "bn_loss")
    g, s = 5, 0
    counts = table.counts[g]
    keep = space.sizes.clone()
    keep[g] = counts[1]
    one = CandidateBatch(keep[None], torch.zeros_like(keep)[None])
    assert float(proxy(one, "bn_kl")[0]) == pytest.approx(table.values["kl"][g][s][1])
    assert float(proxy(space.full(), "bn_kl")[0]) == 0.0
    candidates = space.sample(50, seed=3)
    expected = torch.zeros(50, dtype=torch.float64)
    dense = table.dense(space, "loss")
    for row in range(50):
        for group in range(len(space)):
            expected[row] += dense[group, candidates.strategy[row, group], candidates.keep[row, group]]
    assert torch.allclose(proxy(candidates, "bn_loss"), expected)


def test_unmeasured_keep_counts_are_interpolated_between_measured_ones(measured):
    space, _, _, table = measured
    dense = table.dense(space, "kl")
    g = next(i for i, counts in enumerate(table.counts) if counts[1] - counts[0] > 1)
    low, high = table.counts[g][0], table.counts[g][1]
    middle = (low + high) // 2
    expected = np.interp(middle, [low, high], table.values["kl"][g][0][:2])
    assert float(dense[g, 0, middle]) == pytest.approx(float(expected))
    assert float(dense[g, 0, space.groups[g].size]) == 0.0
    assert float(dense[g, 0, 0]) == float(dense[g, 0, low])


def test_the_table_round_trips_as_json_and_refuses_another_space(measured, digits_checkpoint):
    space, importance, _, table = measured
    again = FitnessTable.from_json(table.to_json())
    assert torch.equal(again.dense(space, "kl"), table.dense(space, "kl"))
    model, _ = load_model(digits_checkpoint)
    other = PruningSpace.from_model(model.eval(), torch.randn(2, 1, 8, 8), strategies=("min",))
    with pytest.raises(PruneSearchError, match="another search space"):
        ProxyEvaluator(other, importance, fitness=table)
    with pytest.raises(PruneSearchError, match="needs the study's measured fitness table"):
        ProxyEvaluator(space, importance)(space.full(), "bn_kl")


@pytest.mark.slow
def test_a_bn_kl_study_stores_its_table_once_and_every_worker_scores_with_it(digits_checkpoint, tmp_path):
    url = f"sqlite:///{tmp_path / 'kl.db'}"
    options = StartOptions(
        evaluations=0, checkpoint=digits_checkpoint, proxy="bn_kl", population=20, calibration_batches=2
    )
    handle, created = create_or_join(url, "kl", options, device="cpu", progress=False)
    assert created and handle.fitness is not None
    assert handle.config["fitness"]["samples"] == 256
    stored = get_data(handle.engine, handle.study_id, FITNESS_KEY)
    run_worker(handle, 60)
    joined, created = create_or_join(url, "kl", StartOptions(), device="cpu", progress=False)
    assert not created and joined.fitness.to_json() == stored
    run_worker(joined, 100, seed=1)
    study = optuna.load_study(study_name="kl", storage=url)
    assert study.metric_names[0] == "bn_kl"
    proxy = ProxyEvaluator(handle.space, handle.importance, fitness=joined.fitness)
    for row in front_rows(open_study(url, "kl"))[:10]:
        candidate = CandidateBatch(
            torch.tensor([list(row["keep"].values())]),
            torch.tensor([[handle.space.strategies.index(v) for v in row["strategy"].values()]]),
        )
        assert row["proxy_bn_kl"] == pytest.approx(float(proxy(candidate, "bn_kl")[0]))
    options = StartOptions(evaluations=0, checkpoint=digits_checkpoint, proxy="taylor_loss")
    taylor = create_or_join(url, "taylor", options, device="cpu", progress=False)[0]
    assert taylor.fitness is None and get_data(taylor.engine, taylor.study_id, FITNESS_KEY) is None
