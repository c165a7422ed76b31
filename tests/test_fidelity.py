"""Multi-fidelity search: the surrogate, shared promotions, measured fronts and picks."""

import subprocess
import sys

import numpy as np
import optuna
import pytest
from scipy.stats import spearmanr

from prune_search.errors import PruneSearchError
from prune_search.finalize.select import choose
from prune_search.report.data import collect
from prune_search.search import StartOptions, create_or_join, open_study, run_worker
from prune_search.search.fidelity import Surrogate
from prune_search.search.status import status
from prune_search.search.stored import open_stored
from prune_search.search.stored_front import stored_front_rows
from prune_search.search.summary import front_rows, load_archive
from prune_search.storage import tables
from prune_search.storage.measurements import Promotion, claim_promotions, read_scores, record_scores
from prune_search.storage.study_data import register_worker


def test_the_surrogate_corrects_a_fast_fitness_that_misses_one_group():
    rng = np.random.default_rng(0)
    ratios = rng.uniform(0.1, 1.0, size=(400, 6))
    fast = (1 - ratios).sum(1) * 0.1
    truth = fast * np.exp(3.0 * (1 - ratios[:, 0]))  # group 0 hurts far more than the fast fitness says
    features = np.concatenate([ratios, np.log(fast + 1e-3)[:, None]], 1)
    measured = rng.choice(400, 40, replace=False)
    estimate = Surrogate(features[measured], fast[measured], truth[measured])(features, fast)
    assert spearmanr(estimate, truth).statistic > 0.95 > spearmanr(fast, truth).statistic + 0.1
    few = Surrogate(features[:3], fast[:3], truth[:3])
    assert few.model is None
    assert np.allclose(few(features[:3], fast[:3]), np.exp(np.log(fast[:3] + 1e-3) + few.offset) - 1e-3)


def _options(checkpoint, **kwargs) -> StartOptions:
    return StartOptions(checkpoint=checkpoint, population=20, calibration_batches=2, **kwargs)


@pytest.fixture(scope="module")
def measured_study(digits_checkpoint, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('fidelity') / 'mf.db'}"
    handle, _ = create_or_join(url, "mf", _options(digits_checkpoint, evaluations=10), device="cpu", progress=False)
    reports = []
    run_worker(handle, 200, seed=0, on_generation=reports.append)
    return url, handle, reports


def test_a_multi_fidelity_study_measures_exactly_its_budget_of_front_candidates(measured_study):
    url, handle, reports = measured_study
    scores = read_scores(handle.engine, handle.study_id)
    assert len(scores) == 10
    assert sum(r.measured for r in reports) <= 10  # the rest was spent on the corrected front at the end
    trials = optuna.load_study(study_name="mf", storage=url).get_trials(deepcopy=False)
    measured = [t for t in trials if "measured" in t.user_attrs]
    assert len(measured) == 10
    for trial in measured:
        values = trial.user_attrs["measured"]
        assert set(values) == {"accuracy", "loss", "kl"}
        assert 0.0 <= values["accuracy"] <= 1.0 and values["kl"] >= 0.0
    info = status(handle)
    assert info["evaluations"] == {"budget": 10, "measured": 10, "claimed": 10}


def test_the_front_and_the_pick_rest_on_measured_candidates(measured_study):
    url, handle, _ = measured_study
    rows = front_rows(handle)
    assert rows and all("measured" in r and r["score"] == r["measured"]["kl"] for r in rows)
    stored = stored_front_rows(handle)  # what `front` prints, read from the stored trials
    assert [(r["trial"], r["keep"], r["score"], r["measured"]) for r in stored] == [
        (r["trial"], r["keep"], r["score"], r["measured"]) for r in rows
    ]
    reported = collect(open_stored(url, handle.study.study_name)).front  # the report's front rests on them too
    assert [(r["trial"], r["score"]) for r in reported] == [(r["trial"], r["score"]) for r in rows]
    assert [r["macs"] for r in rows] == sorted(r["macs"] for r in rows)
    middle = sorted(r["macs"] for r in rows)[len(rows) // 2]
    numbers, _ = choose(handle, max_macs=str(middle))
    fitting = [r for r in rows if r["macs"] <= middle]
    assert numbers == [min(fitting, key=lambda r: (r["score"], r["macs"]))["trial"]]


def test_more_trials_spend_no_more_than_the_budget(measured_study):
    _, handle, _ = measured_study
    reopened = open_study(handle.url, "mf")
    run_worker(reopened, 260, seed=5)
    assert len(read_scores(reopened.engine, reopened.study_id)) == 10
    assert len(load_archive(reopened)) == 260


def test_claims_are_shared_and_a_dead_workers_claims_are_taken_over(measured_study):
    _, handle, _ = measured_study
    engine, study_id = handle.engine, handle.study_id
    archive = load_archive(handle)
    done = read_scores(engine, study_id)
    free = [i for i, key in enumerate(archive.keys) if key not in done][:3]
    wanted = [Promotion(archive.keys[i], int(archive.numbers[i]), int(archive.trial_ids[i])) for i in free]
    first, _ = register_worker(engine, study_id)
    second, _ = register_worker(engine, study_id)
    assert claim_promotions(engine, study_id, first, wanted[:2], budget=12) == wanted[:2]
    assert claim_promotions(engine, study_id, second, wanted, budget=12) == []  # held, and the budget is spent
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with engine.begin() as conn:
        conn.execute(tables.workers.update().where(tables.workers.c.worker_id == first).values(pid=int(dead.stdout)))
    taken = claim_promotions(engine, study_id, second, [], budget=12)
    assert taken == wanted[:2]
    record_scores(engine, study_id, taken[0], {"accuracy": 0.5, "loss": 1.0, "kl": 0.25})
    assert read_scores(engine, study_id)[taken[0].digest]["kl"] == 0.25


def test_a_negative_evaluation_budget_is_refused(digits_checkpoint, tmp_path):
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    with pytest.raises(PruneSearchError, match="--evaluations must be 0"):
        create_or_join(url, "bad", _options(digits_checkpoint, evaluations=-1), device="cpu", progress=False)


def test_a_budget_pick_reranks_the_dense_corrected_front(measured_study):
    _, handle, _ = measured_study
    measured = front_rows(handle)
    corrected = front_rows(handle, corrected=True)
    assert len(corrected) > len(measured)
    assert any("measured" not in r for r in corrected)
    assert all(r["score"] == r["measured"]["kl"] for r in corrected if "measured" in r)
    pool = []
    numbers, _ = choose(handle, max_macs="40%", rerank=lambda fitting: pool.extend(fitting) or fitting[0])
    assert numbers == [pool[0]["trial"]]
    limit = int(handle.config["base"]["macs"] * 40 / 100)
    assert {r["trial"] for r in pool} == {r["trial"] for r in corrected if r["macs"] <= limit}
