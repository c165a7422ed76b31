"""The finalizer on digits: knee → fine-tune → export → load, records, resume, ONNX, workers, bad input."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import optuna
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli
from optuna_dashboard import get_note
from services import POSTGRES

import prune_search
from prune_search.errors import PruneSearchError
from prune_search.evaluators import AdaptiveBNEvaluator
from prune_search.finalize import FinalizeConfig, choose, finalize_trial
from prune_search.finalize.rerank import RERANKED, TrainedPick, bn_rerank, kl_rerank, standings_text
from prune_search.finalize.select import fitting_rows, within_budget
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.codec import CandidateCodec
from prune_search.search.study import fitness_batches, open_base
from prune_search.search.summary import front_rows
from prune_search.training.loop import evaluate

FAST = FinalizeConfig(epochs=3, seed=1)


@pytest.fixture(scope="module")
def study(tmp_path_factory, resnet20_checkpoint):
    folder = tmp_path_factory.mktemp("finalize")
    checkpoint = folder / "base.pt"
    shutil.copyfile(resnet20_checkpoint, checkpoint)
    url = f"sqlite:///{folder / 'study.db'}"
    options = StartOptions(evaluations=0, checkpoint=checkpoint, population=40, calibration_batches=2)
    handle, _ = create_or_join(url, "fin", options, device="cpu", progress=False)
    run_worker(handle, 300)
    return handle, url, checkpoint


def _knee(handle) -> int:
    return choose(handle, use_knee=True)[0][0]


def test_knee_finalize_exports_a_model_that_loads_with_identical_logits(study, tmp_path, digits):
    handle, url, _ = study
    number = _knee(handle)
    result, model = finalize_trial(
        handle, number, FAST, tmp_path / "out", artifact_dir=tmp_path / "art", progress=False
    )
    loaded = prune_search.load_pruned(tmp_path / "out")
    x, _ = next(iter(digits.loader("test", 64)))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert evaluate(loaded, digits.loader("test", 512), torch.device("cpu")).accuracy == result["test_acc"]
    assert sum(p.numel() for p in loaded.parameters()) == result["params"]
    assert result["macs_reduction_pct"] > 0
    weights = torch.load(tmp_path / "out" / "weights.pt", weights_only=True)
    assert set(weights) == set(loaded.state_dict())

    trial = next(t for t in optuna.load_study(study_name="fin", storage=url).trials if t.number == number)
    assert trial.user_attrs["finalized.test_acc"] == result["test_acc"]
    assert trial.user_attrs["finalized.macs"] == result["macs"]
    assert not any(isinstance(v, dict | list) for k, v in trial.user_attrs.items() if k.startswith("finalized"))
    assert "Finalized trial" in get_note(optuna.trial.Trial(handle.study, trial._trial_id))
    artifacts = optuna.artifacts.get_all_artifact_meta(trial, storage=handle.storage)
    assert [a.filename for a in artifacts] == [f"trial-{number}-plan.json"]
    plan = (tmp_path / "art" / artifacts[0].artifact_id).read_text()
    assert json.loads(plan) == json.loads((tmp_path / "out" / "plan.json").read_text())


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(study, tmp_path):
    handle, url, _ = study
    number = _knee(handle)
    args = ["finalize", "--study", "fin", "--storage", url, "--trial", str(number), "--epochs", "12"]
    args += ["--no-progress", "--device", "cpu", "--artifact-dir", str(tmp_path / "art")]
    straight = run_cli(*args, "--out", str(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr
    victim = subprocess.Popen(
        [sys.executable, "-m", "prune_search", *args, "--out", str(tmp_path / "b")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "b" / "state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "b" / "result.json").exists(), "the run finished before it could be killed"
    resumed = run_cli(*args, "--out", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    result_a = json.loads((tmp_path / "a" / "result.json").read_text())
    result_b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert (result_a["test_acc"], result_a["best_epoch"]) == (result_b["test_acc"], result_b["best_epoch"])


def test_no_kd_uses_the_same_schedule_and_records_it(study, tmp_path):
    handle, _, _ = study
    number = _knee(handle)
    kd, _ = finalize_trial(handle, number, FAST, tmp_path / "kd", artifact_dir=tmp_path / "art", progress=False)
    ce_config = FinalizeConfig(epochs=3, seed=1, kd=False)
    ce, _ = finalize_trial(handle, number, ce_config, tmp_path / "ce", artifact_dir=tmp_path / "art", progress=False)
    assert kd["kd"] and not ce["kd"]
    assert kd["epochs"] == ce["epochs"]
    assert kd["macs"] == ce["macs"]


def test_onnx_export_matches_pytorch(study, tmp_path, digits):
    onnxruntime = pytest.importorskip("onnxruntime")
    handle, _, _ = study
    number = _knee(handle)
    config = FinalizeConfig(epochs=1)
    _, model = finalize_trial(
        handle, number, config, tmp_path / "o", onnx=True, artifact_dir=tmp_path / "art", progress=False
    )
    session = onnxruntime.InferenceSession(str(tmp_path / "o" / "model.onnx"))
    x, _ = next(iter(digits.loader("test", 32)))
    (onnx_logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits, model(x).numpy(), atol=1e-4, rtol=0)


@pytest.mark.db
@pytest.mark.slow
def test_two_workers_on_postgresql_split_the_front_without_overlap(study, tmp_path):
    _, _, checkpoint = study
    name = f"fin-{uuid.uuid4().hex[:8]}"
    options = StartOptions(evaluations=0, checkpoint=checkpoint, population=40, calibration_batches=2)
    handle, _ = create_or_join(POSTGRES, name, options, device="cpu", progress=False)
    run_worker(handle, 200)
    args = ["finalize", "--study", name, "--storage", POSTGRES, "--front", "4", "--epochs", "2"]
    args += ["--out", str(tmp_path / "front"), "--no-progress", "--device", "cpu", "--artifact-dir", str(tmp_path)]
    workers = [
        subprocess.Popen([sys.executable, "-m", "prune_search", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-800:] for o in outputs]
    done = [[line for line in o[0].decode().splitlines() if "→" in line] for o in outputs]
    finalized = [line.split(":")[0] for lines in done for line in lines]
    assert len(finalized) == 4
    assert len(set(finalized)) == 4
    assert len(list((tmp_path / "front").iterdir())) == 4
    expected = {r["trial"] for r in front_rows(handle)}
    trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials(deepcopy=False)
    assert {t.number for t in trials if "finalized.test_acc" in t.user_attrs} <= expected


def test_bad_choices_are_refused_with_one_line(study, tmp_path):
    handle, url, _ = study
    base = ["finalize", "--study", "fin", "--storage", url, "--epochs", "1", "--no-progress"]
    assert_one_line_error(run_cli(*base, "--trial", "99999", "--out", str(tmp_path / "x")), "no trial 99999")
    front = {r["trial"] for r in front_rows(handle)}
    off_front = next(n for n in range(300) if n not in front)
    refused = run_cli(*base, "--trial", str(off_front), "--out", str(tmp_path / "x"))
    assert_one_line_error(refused, "not on the feasible Pareto front", "--force")
    forced = run_cli(*base, "--trial", str(off_front), "--force", "--out", str(tmp_path / "f"))
    assert forced.returncode == 0, forced.stderr
    assert "warning: trial" in forced.stderr
    tiny = run_cli(*base, "--max-macs", "10", "--out", str(tmp_path / "x"))
    assert_one_line_error(tiny, "no front trial meets the budget; the closest is trial")
    assert_one_line_error(run_cli(*base, "--out", str(tmp_path / "x")), "choose the trial one way")
    bad_pick = run_cli(*base, "--max-macs", "50%", "--pick", "magic", "--out", str(tmp_path / "x"))
    assert_one_line_error(bad_pick, "unknown --pick 'magic'", "trained, bn, kl, best")
    for margin in ("1", "-0.1"):
        bad_margin = run_cli(*base, "--max-macs", "50%", "--margin", margin, "--out", str(tmp_path / "x"))
        assert_one_line_error(bad_margin, "--margin must be in [0, 1)", f"got {float(margin)}")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_budget_picks_the_best_after_bn_recalibration_or_the_best_score(study, tmp_path):
    handle, url, checkpoint = study
    fitting = fitting_rows(handle, front_rows(handle), "50%", None)
    base = open_base(handle, checkpoint)
    model, bundle = base.model, base.bundle
    chosen, accuracy = bn_rerank(handle, fitting, model, bundle, torch.device("cpu"))
    nearest = sorted(fitting, key=lambda r: -r["macs"])[:RERANKED]
    assert chosen in nearest and all(r["macs"] <= handle.config["base"]["macs"] / 2 for r in nearest)
    calibration = [b for _, b in zip(range(8), bundle.loader("train", 128), strict=False)]
    validation = [b for _, b in zip(range(4), bundle.loader("val", 128), strict=False)]
    one_by_one = [
        float(
            AdaptiveBNEvaluator(model, handle.space, handle.importance, calibration, validation)(
                CandidateCodec(handle.space).from_rows([row])
            )[0]
        )
        for row in nearest
    ]
    assert accuracy == pytest.approx(max(one_by_one)) and one_by_one.index(max(one_by_one)) == nearest.index(chosen)
    base = ["finalize", "--study", "fin", "--storage", url, "--max-macs", "50%", "--epochs", "1", "--no-progress"]
    done = run_cli(*base, "--pick", "bn", "--out", str(tmp_path / "bn"))
    assert done.returncode == 0, done.stderr
    assert f"trial {chosen['trial']}: the best by val accuracy after BN recalibration" in done.stdout
    assert json.loads((tmp_path / "bn" / "result.json").read_text())["trial"] == chosen["trial"]
    done = run_cli(*base, "--pick", "best", "--out", str(tmp_path / "proxy"))
    assert done.returncode == 0, done.stderr
    best_proxy = within_budget(handle, front_rows(handle), "50%", None)["trial"]
    assert json.loads((tmp_path / "proxy" / "result.json").read_text())["trial"] == best_proxy


def test_the_default_budget_pick_trains_the_front_and_the_references_briefly(study, tmp_path, monkeypatch):
    from prune_search.finalize import rerank
    from prune_search.search.baselines import baseline
    from prune_search.search.config import parse_budget
    from prune_search.storage.bulk import complete_trials

    handle, url, _ = study
    monkeypatch.setattr(rerank, "TRAINED_RUNGS", (2, 4))
    monkeypatch.setattr(rerank, "TRAINED_POOL_BATCHES", 2)
    monkeypatch.setattr(rerank, "HELD_OUT_BATCHES", 2)
    held = complete_trials(handle.engine, handle.study_id)
    base = ["finalize", "--study", "fin", "--storage", url, "--max-macs", "40%", "--epochs", "1", "--no-progress"]
    done = run_cli(*base, "--out", str(tmp_path / "trained"))
    assert done.returncode == 0, done.stderr
    assert rerank.AUTO_PICK == "trained" and "rung 1:" in done.stdout and "rung 2:" in done.stdout
    picked, how = re.search(r"^trial (\d+): (the least KL|uniform pruning, kept)", done.stdout, re.M).groups()
    standings = next(line for line in done.stdout.splitlines() if line.startswith("KL after 4 KD steps: "))
    leader = standings.split(": ", 1)[1]  # the winner leads the last rung, named if it is a reference
    if how == "the least KL":
        assert re.match(rf"(\w+ \()?trial {picked}\)? ", leader)
    else:  # the winner was not 25 % below uniform: uniform stays, and the line says so
        assert re.search(rf"below uniform \(trial {picked}\)'s [0-9.]+: uniform stays the pick", standings)
    for name in rerank.REFERENCES:  # each reference is in the last rung or says where it left
        assert re.search(rf"{name} \(trial \d+\)( [0-9.]+| left after 2 steps, [0-9.]+, \d+ of \d+)", standings)
    result = json.loads((tmp_path / "trained" / "result.json").read_text())
    assert result["trial"] == int(picked) and result["macs"] <= 0.4 * handle.config["base"]["macs"]
    assert complete_trials(handle.engine, handle.study_id) - held <= len(rerank.REFERENCES)
    base_model = open_base(handle)
    references = rerank.reference_rows(handle, "40%", None, base_model.model, base_model.bundle, torch.device("cpu"))
    assert list(references) == list(rerank.REFERENCES)  # each reference reaches the budget here
    stored = references["uniform"]
    budget = parse_budget("40%", handle.config["base"]["macs"], "--max-macs")
    uniform = baseline(handle.space, handle.importance, "uniform", budget)
    assert list(stored["keep"].values()) == uniform.keep[0].tolist()  # stored as a trial, read back as one


class _ScriptedKL:
    """A stand-in for TrainedEvaluator: the KL of each candidate (by its keep counts) after ``steps`` comes from
    ``script(trial, steps)``; every scoring is logged as (trial, steps)."""

    def __init__(self, rows, script, log):
        self.trials = {tuple(row["keep"].values()): row["trial"] for row in rows}
        self.script, self.log = script, log

    def __call__(self, batch, steps):
        trials = [self.trials[tuple(keep)] for keep in batch.keep.tolist()]
        self.log.extend((trial, steps) for trial in trials)
        return {"kl": torch.tensor([self.script(trial, steps) for trial in trials])}


@pytest.mark.parametrize(
    ("uniform_kl", "margin", "kept", "rescored"),
    [
        (0.11, 0.25, True, False),  # uniform in the last rung, the winner only 9 % below it: uniform stays
        (0.20, 0.25, False, False),  # the winner 50 % below uniform: it replaces uniform
        (0.11, 0.0, False, False),  # margin 0: always the winner, the check still shown
        (0.30, 0.25, False, True),  # uniform left at the first rung: scored once more after the last rung's steps
        (0.105, 0.25, True, True),  # ... and kept when the winner is not clearly better there
    ],
)
def test_the_trained_pick_keeps_uniform_unless_the_winner_is_clearly_better(
    study, monkeypatch, uniform_kl, margin, kept, rescored
):
    from prune_search.finalize import rerank

    handle, _, _ = study
    fitting = fitting_rows(handle, front_rows(handle), "60%", None)
    rows = rerank.nearest(fitting)
    leader, incumbent = rows[0]["trial"], rows[-1]["trial"]
    first_rung = rerank.TRAINED_RUNGS[0]

    def script(trial, steps):
        if trial == incumbent:  # 0.105 or 0.30 at the first rung is behind the best third; later it is uniform_kl
            return 0.4 if rescored and steps == first_rung else uniform_kl
        return 0.1 if trial == leader else 0.12 + 0.001 * trial

    log = []
    monkeypatch.setattr(rerank, "trained_batches", lambda bundle: ([], []))
    monkeypatch.setattr(rerank, "TrainedEvaluator", lambda *args: _ScriptedKL(rows, script, log))
    pick = rerank.trained_rerank(handle, fitting, None, None, torch.device("cpu"), {"uniform": rows[-1]}, None, margin)
    last_steps = pick.rungs[-1]["steps"]
    assert (incumbent in pick.rungs[-1]["kl"]) is not rescored
    assert log.count((incumbent, last_steps)) == 1  # scored once at the last rung's steps, in it or after it
    assert pick.check == {
        "steps": last_steps,
        "leader": leader,
        "leader_kl": pytest.approx(0.1),
        "incumbent": incumbent,
        "incumbent_kl": pytest.approx(0.105 if uniform_kl == 0.105 else uniform_kl),
        "margin": margin,
        "kept": kept,
    }
    assert pick.row["trial"] == (incumbent if kept else leader)
    assert pick.kl == pytest.approx(uniform_kl if kept else 0.1)
    line = standings_text(pick).split("; ")[-1]
    assert line.startswith(f"trial {leader}'s KL after {last_steps} steps is ")
    assert f"below uniform (trial {incumbent})'s " in line
    verdict = "uniform stays the pick" if kept else "the winner is the pick"
    assert line.endswith(
        f": {verdict} (a switch needs 25% below)" if margin else f"'s {pick.check['incumbent_kl']:.4f}"
    )


def test_standings_name_the_references_where_they_stood_and_where_they_left():
    rungs = [
        {"steps": 40, "kl": {12: 0.05, 3: 0.06, 7: 0.07, 9: 0.08, 4: 0.11}},
        {"steps": 120, "kl": {3: 0.02, 12: 0.03}},
    ]
    pick = TrainedPick({"trial": 3}, 0.02, rungs, {3: "uniform", 4: "global_mean"})
    assert standings_text(pick) == (
        "KL after 120 KD steps: uniform (trial 3) 0.0200, trial 12 0.0300; "
        "global_mean (trial 4) left after 40 steps, 0.1100, 5 of 5"
    )
    first, last = pick.labelled_rungs()
    assert first == {
        "steps": 40,
        "kl": [
            [12, "front", 0.05],
            [3, "uniform", 0.06],
            [7, "front", 0.07],
            [9, "front", 0.08],
            [4, "global_mean", 0.11],
        ],
    }
    assert last == {"steps": 120, "kl": [[3, "uniform", 0.02], [12, "front", 0.03]]}


def test_a_global_pruner_that_fails_on_the_model_leaves_the_pool_with_a_warning(study, monkeypatch):
    from prune_search.finalize import rerank

    handle, _, _ = study
    base = open_base(handle)

    def broken(*args):
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(rerank, "global_pruning_candidate", broken)
    with pytest.warns(UserWarning, match="tp_global_taylor left out of the pick's pool: cannot trace this model"):
        references = rerank.reference_rows(handle, "40%", None, base.model, base.bundle, torch.device("cpu"))
    assert list(references) == ["uniform", "global_mean"]


def test_kl_rerank_picks_the_least_whole_candidate_kl_on_the_train_sample(study):
    handle, _, checkpoint = study
    fitting = fitting_rows(handle, front_rows(handle), "35%", None)
    base = open_base(handle, checkpoint)
    model, bundle = base.model, base.bundle
    chosen, kl = kl_rerank(handle, fitting, model, bundle, torch.device("cpu"))
    nearest = sorted(fitting, key=lambda r: -r["macs"])[:RERANKED]
    sample = fitness_batches(bundle)
    scores = [
        float(
            AdaptiveBNEvaluator(model, handle.space, handle.importance, [], sample, batch_statistics=True).measure(
                CandidateCodec(handle.space).from_rows([row])
            )["kl"][0]
        )
        for row in nearest
    ]
    assert kl == pytest.approx(min(scores), rel=1e-4) and scores.index(min(scores)) == nearest.index(chosen)
    assert len(set(scores)) > 1


def test_an_output_folder_holding_another_run_is_refused(study, tmp_path):
    handle, _, _ = study
    number = _knee(handle)
    finalize_trial(handle, number, FAST, tmp_path / "out", artifact_dir=tmp_path / "art", progress=False)
    before = (tmp_path / "out" / "weights.pt").read_bytes()
    with pytest.raises(PruneSearchError, match="holds another run"):
        finalize_trial(handle, number, FinalizeConfig(epochs=2), tmp_path / "out", progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(PruneSearchError, match="not empty"):
        finalize_trial(handle, number, FAST, tmp_path / "other", progress=False)
    assert (tmp_path / "out" / "weights.pt").read_bytes() == before


def test_a_missing_or_mismatched_base_checkpoint_is_refused(study, tmp_path, digits_checkpoint):
    handle, _, checkpoint = study
    number = _knee(handle)
    with pytest.raises(PruneSearchError, match="missing on this machine"):
        finalize_trial(handle, number, FAST, tmp_path / "o", checkpoint=tmp_path / "gone.pt", progress=False)
    other = digits_checkpoint  # same architecture, other weights
    with pytest.raises(PruneSearchError, match="SHA-256 differs"):
        finalize_trial(handle, number, FAST, tmp_path / "o", checkpoint=other, progress=False)
    assert not (tmp_path / "o").exists()
    assert checkpoint.is_file()


def test_load_pruned_refuses_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(PruneSearchError, match=r"missing plan\.json"):
        prune_search.load_pruned(tmp_path)


@pytest.mark.slow
def test_exported_model_loads_without_the_search_code(study, tmp_path):
    handle, _, _ = study
    finalize_trial(handle, _knee(handle), FAST, tmp_path / "out", artifact_dir=tmp_path / "art", progress=False)
    script = (
        "import sys, torch, prune_search\n"
        "m = prune_search.load_pruned(sys.argv[1])\n"
        "print(m(torch.zeros(1, 1, 8, 8)).shape[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True, text=True)
    assert result.stdout.strip() == "10", result.stderr
