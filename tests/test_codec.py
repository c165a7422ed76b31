"""The candidate codec: genes ↔ candidates ↔ Optuna params ↔ trial rows on real spaces, and the archive's
candidates of a real study equal what its Optuna trials record."""

from dataclasses import replace

import numpy as np
import optuna
import pytest
import torch

from prune_search.errors import PruneSearchError
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.codec import CandidateCodec
from prune_search.search.summary import load_archive
from prune_search.space import CandidateBatch, PruningSpace, strategy_param


@pytest.fixture(scope="module", params=["plain", "rounded"])
def space(request):
    """resnet20's space as built by default, and one whose keep counts round to 4 (many levels share a count,
    several reach the full group) with a raised floor on one group."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20", 1, 10, 8)).eval()
    if request.param == "plain":
        return PruningSpace.from_model(model, torch.randn(2, 1, 8, 8))
    space = PruningSpace.from_model(model, torch.randn(2, 1, 8, 8), round_to=4)
    return PruningSpace(space.structure, replace(space.options, group_min_ratio={"layer1.0.conv1": 0.5}))


def _genes(codec: CandidateCodec, count: int, seed: int) -> np.ndarray:
    """``count`` random individuals ``[count, 2G]`` inside the space (levels at or above each group's floor)."""
    rng = np.random.default_rng(seed)
    levels = rng.integers(codec.min_level, len(codec.grid), size=(count, len(codec)))
    strategies = rng.integers(len(codec.space.strategies), size=(count, len(codec)))
    return np.concatenate([levels, strategies], axis=1)


def _equal(a: CandidateBatch, b: CandidateBatch) -> bool:
    return torch.equal(a.keep, b.keep) and torch.equal(a.strategy, b.strategy)


def test_genes_to_candidates_to_params_and_back_give_the_canonical_genes(space):
    codec = CandidateCodec(space)
    X = _genes(codec, 200, seed=1)
    batch = codec.batch(X)
    space.validate(batch)
    assert torch.equal(
        batch.keep, space.level_keep_counts()[torch.arange(len(space)), torch.from_numpy(X[:, : len(space)])]
    )
    canonical = codec.canonical(X)
    assert np.array_equal(codec.canonical(codec.from_params(space.to_params(batch))), canonical)
    assert np.array_equal(codec.canonical(codec.from_params(codec.params(X))), canonical)
    assert np.array_equal(codec.genes(codec.batch(canonical)), canonical)
    assert np.array_equal(codec.canonical(canonical), canonical)
    params = codec.params(X)[0]
    assert set(params) == set(space.distributions())
    assert _equal(space.from_params(params), batch[0])


def test_canonical_genes_name_one_pruned_model_and_equal_models_share_a_digest(space):
    codec = CandidateCodec(space)
    X = _genes(codec, 300, seed=2)
    groups = len(space)
    table = space.level_keep_counts().numpy()
    # the same pruned models written differently: the highest level with each keep count, any strategy in full groups
    last_level = np.stack([[np.flatnonzero(table[g] == k).max() for k in table[g]] for g in range(groups)])
    other = X.copy()
    other[:, :groups] = last_level[np.arange(groups), X[:, :groups]]
    full = codec.keep(X) == space.sizes.numpy()
    other[:, groups:] = np.where(full, (X[:, groups:] + 1) % len(space.strategies), X[:, groups:])
    assert np.array_equal(codec.keep(other), codec.keep(X))
    assert np.array_equal(codec.canonical(other), codec.canonical(X))
    assert codec.digests(codec.canonical(other)) == codec.digests(codec.canonical(X))
    canonical = codec.canonical(X)
    models = {
        (tuple(k), tuple(s))
        for k, s in zip(codec.keep(canonical).tolist(), canonical[:, groups:].tolist(), strict=True)
    }
    assert len(set(codec.digests(canonical))) == len(models) == len(np.unique(canonical, axis=0))


def test_trial_rows_decode_to_the_candidates_of_the_genes(space):
    codec = CandidateCodec(space)
    X = _genes(codec, 50, seed=3)
    rows = codec.rows(X)
    assert list(rows[0]["keep"]) == space.names
    assert set(rows[0]["strategy"].values()) <= set(space.strategies)
    assert _equal(codec.from_rows(rows), codec.batch(X))
    assert _equal(codec.from_rows(rows[7:8]), codec.batch(X)[7])
    assert len(codec.from_rows([])) == 0


def test_seeds_decode_their_ratios_with_strategy_min(space):
    codec = CandidateCodec(space)
    names = space.names
    seeds = [{names[0]: 0.5, names[-1]: 0.3}, {}, {name: 0.0 for name in names}]
    X = codec.seeds(seeds)
    ratios = torch.tensor([[seed.get(name, 1.0) for name in names] for seed in seeds], dtype=torch.float64)
    assert np.array_equal(X[:, : len(names)], space.levels_at(ratios).numpy())
    batch = codec.batch(X)
    assert torch.equal(batch.keep[1], space.sizes)
    assert torch.equal(batch.keep[2], space.floor())
    assert int(batch.keep[0, -1]) == int(space.keep_counts(ratios[:1])[0, -1])
    assert set(batch.strategy.unique().tolist()) == {space.strategies.index("min")}
    assert codec.seeds([]).shape == (0, 2 * len(names))


def test_a_keep_count_outside_the_space_is_refused(space):
    codec = CandidateCodec(space)
    batch = codec.batch(_genes(codec, 2, seed=4))
    keep = batch.keep.clone()
    keep[1, 0] = 0
    with pytest.raises(PruneSearchError, match="candidate 1 keeps 0"):
        codec.genes(CandidateBatch(keep, batch.strategy))


def test_the_archive_decodes_a_study_as_its_optuna_trials_record_it(sqlite_url, digits_checkpoint):
    options = StartOptions(
        evaluations=0, checkpoint=digits_checkpoint, population=20, calibration_batches=2, proxy="taylor_loss"
    )
    handle, _ = create_or_join(sqlite_url, "codec", options, device="cpu", progress=False)
    run_worker(handle, 40, seed=0)
    archive = load_archive(handle)
    codec = handle.codec
    trials = optuna.load_study(study_name="codec", storage=sqlite_url).get_trials(deepcopy=False)
    numbers = [t.number for t in trials][::-1]
    by_number = {t.number: t for t in trials}
    stored = [by_number[n] for n in numbers]
    from_trials = codec.from_rows(
        [
            {
                "keep": codec.keep_of(t.user_attrs),
                "strategy": {name: t.params[strategy_param(name)] for name in codec.space.names},
            }
            for t in stored
        ]
    )
    assert _equal(codec.batch(archive.genes_of(numbers)), from_trials)
    where = {int(n): i for i, n in enumerate(archive.numbers.tolist())}
    X = archive.X[[where[n] for n in numbers]]
    assert np.array_equal(codec.from_params([by_number[n].params for n in numbers]), X)
    assert [archive.keys[where[n]] for n in numbers] == codec.digests(X)
    with pytest.raises(PruneSearchError, match="no trial 99999 in study 'codec'"):
        archive.genes_of([numbers[0], 99999])
