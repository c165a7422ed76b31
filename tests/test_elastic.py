"""Prune-and-grow on digits: nested levels equal the pruned models, survive growing and fine-tuning."""

import csv
import sys

import pytest
import torch
from cli_helpers import run_cli

from prune_search.cli import main
from prune_search.elastic import (
    build_elastic,
    fine_tune_levels,
    load_elastic,
    make_elastic,
    nest,
    pick_trials,
    recalibrate_levels,
    save_elastic,
    trial_candidates,
)
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, materialize
from prune_search.finalize import FinalizeConfig
from prune_search.models import ModelSpec
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.space import CandidateBatch
from prune_search.training import load_model
from prune_search.training.loop import evaluate

STRICT = FinalizeConfig(epochs=1, lr=0.05, momentum=0.9, weight_decay=0.05, seed=3)


@pytest.fixture(scope="module")
def study(digits_checkpoint, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('elastic') / 'study.db'}"
    options = StartOptions(
        evaluations=0, checkpoint=digits_checkpoint, population=20, calibration_batches=2, proxy="taylor_loss"
    )
    handle, _ = create_or_join(url, "el", options, device="cpu", progress=False)
    run_worker(handle, 60)
    return handle, url


@pytest.fixture(scope="module")
def base(study, digits_checkpoint):
    handle, _ = study
    model, _ = load_model(digits_checkpoint, ModelSpec.from_dict(handle.config["model"]))
    return model.eval()


def _elastic(handle, base, widths: int):
    numbers = pick_trials(handle, widths, None)
    nested = nest(handle.space, numbers, trial_candidates(handle, numbers))
    spec = ModelSpec.from_dict(handle.config["model"])
    return build_elastic(base, spec, handle.space, handle.importance, nested, {}), nested


@pytest.fixture(scope="module")
def three(study, base):
    return _elastic(study[0], base, 3)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _batch(digits):
    return next(iter(digits.loader("val", 64)))[0]


def test_every_level_is_the_standalone_pruned_model_bit_for_bit(study, base, three, digits):
    handle, _ = study
    elastic, nested = three
    x = _batch(digits)
    assert len(elastic.levels) == 3
    assert bool((nested.candidates.keep[1:] >= nested.candidates.keep[:-1]).all())
    macs = [level.macs for level in elastic.levels]
    assert macs == sorted(macs) and len(set(macs)) == 3
    for index, level in enumerate(elastic.levels):
        standalone, _ = materialize(base, handle.space, handle.importance, nested.candidates[index])
        elastic.set_width(index)
        state = elastic.net.state_dict()
        assert state.keys() == standalone.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in standalone.state_dict().items())
        assert torch.equal(_logits(elastic, x), _logits(standalone, x))
        exact_macs, exact_params = CostModel(handle.space)(nested.candidates[index])
        assert (level.macs, level.params) == (int(exact_macs[0]), int(exact_params[0]))
        assert sum(p.numel() for p in elastic.net.parameters()) == level.params


def test_each_level_is_a_prefix_of_the_stored_channel_order(three):
    elastic, _ = three
    for level in elastic.levels:
        for axis, positions in elastic.layout.level_index(level.keep).items():
            assert sorted(positions.tolist()) == list(range(len(positions))), axis


def test_growing_and_shrinking_restores_identical_state_and_outputs(three, digits):
    elastic, _ = three
    x = _batch(digits)
    small_state = {k: v.clone() for k, v in elastic.set_width(0).net.state_dict().items()}
    small = _logits(elastic, x)
    large_state = {k: v.clone() for k, v in elastic.set_width(2).net.state_dict().items()}
    large = _logits(elastic, x)
    assert large.shape == small.shape and not torch.equal(large, small)
    with torch.no_grad():
        for parameter in elastic.net.parameters():
            parameter.add_(1.0)
    assert torch.equal(_logits(elastic.set_width(0), x), small)
    assert all(torch.equal(elastic.net.state_dict()[k], v) for k, v in small_state.items())
    assert torch.equal(_logits(elastic.set_width(2), x), large)
    assert all(torch.equal(elastic.net.state_dict()[k], v) for k, v in large_state.items())


def test_fine_tuning_a_larger_level_leaves_the_smaller_one_bit_exact(study, base, digits, tmp_path):
    elastic, _ = _elastic(study[0], base, 2)
    x = _batch(digits)
    seen = {}

    def before_level(level: int) -> None:
        if level == 1:
            seen.update(small=_logits(elastic.set_width(0), x), state=elastic.level_state(0))
            seen.update(large=elastic.level_state(1))

    cpu = torch.device("cpu")
    fine_tune_levels(
        elastic, digits, STRICT, tmp_path, teacher=base, device=cpu, progress=False, on_level_start=before_level
    )
    assert list(tmp_path.iterdir()) == []
    assert torch.equal(_logits(elastic.set_width(0), x), seen["small"])
    assert all(torch.equal(elastic.level_state(0)[k], v) for k, v in seen["state"].items())
    for key, value in elastic.level_state(1).items():
        core = elastic.core_mask(1, key, value.shape)
        assert torch.equal(value[core], seen["large"][key][core]), key
        if key.endswith("weight") and bool((~core).any()):
            assert not torch.equal(value[~core], seen["large"][key][~core]), key


def test_checkpoint_loads_weights_only_with_identical_levels(three, tmp_path, digits):
    elastic, _ = three
    save_elastic(elastic, tmp_path / "elastic.pt")
    payload = torch.load(tmp_path / "elastic.pt", weights_only=True)
    assert payload["format"] == "prune-search/elastic"
    loaded = load_elastic(tmp_path)
    x = _batch(digits)
    assert [lv.keep for lv in loaded.levels] == [lv.keep for lv in elastic.levels]
    for index in range(3):
        assert torch.equal(_logits(loaded.set_width(index), x), _logits(elastic.set_width(index), x))
    with pytest.raises(PruneSearchError, match=r"levels are 0\.\.2"):
        loaded.set_width(3)


def test_nesting_rules(study):
    handle, _ = study
    space = handle.space
    table = space.level_keep_counts()
    groups = torch.arange(len(space))
    a = table[groups, torch.tensor([0, 5] * (len(space) // 2) + [0] * (len(space) % 2))]
    b = table[groups, torch.tensor([5, 0] * (len(space) // 2) + [5] * (len(space) % 2))]
    c = table[groups, -1]
    strategy = torch.zeros(3, len(space), dtype=torch.int64)
    strategy[1, 0] = 1
    candidates = CandidateBatch(torch.stack([c, a, b]), strategy)
    up = nest(space, [7, 8, 9], candidates, "max")
    down = nest(space, [7, 8, 9], candidates, "min")
    assert up.trials[-1] == down.trials[-1] == 7
    assert torch.equal(up.candidates.keep[-1], c) and torch.equal(down.candidates.keep[-1], c)
    first = up.trials[0]
    assert torch.equal(up.candidates.keep[0], a if first == 8 else b)
    assert torch.equal(up.candidates.keep[1], torch.maximum(a, b))
    assert torch.equal(down.candidates.keep[0], torch.minimum(a, b))
    assert torch.equal(down.candidates.keep[1], b if first == 8 else a)
    assert bool((up.macs >= up.trial_macs).all()) and bool((down.macs <= down.trial_macs).all())
    assert any("different strategies in 1 of" in note for note in up.notes)
    assert bool((up.candidates.strategy == 0).all())
    same = nest(space, [1, 2, 3], CandidateBatch(torch.stack([a, a, c]), torch.zeros(3, len(space)).long()), "max")
    assert same.trials == [1, 3] and any("trial 2 has the same nested widths" in n for n in same.notes)
    with pytest.raises(PruneSearchError, match="single width"):
        nest(space, [1, 2], CandidateBatch(torch.stack([c, c]), torch.zeros(2, len(space)).long()), "max")


def test_cli_writes_the_checkpoint_and_a_table_that_matches_it(study, tmp_path, digits, monkeypatch, capsys):
    handle, url = study
    numbers = pick_trials(handle, 2, None)
    out = tmp_path / "el"
    args = ["elastic", "--study", "el", "--storage", url, "--trial-numbers", ",".join(map(str, numbers))]
    done = run_cli(*args, "--epochs", "1", "--out", str(out), "--no-progress", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "val acc" in done.stdout and "MACs (% base)" in done.stdout
    rows = list(csv.DictReader((out / "levels.csv").read_text().splitlines()))
    loaded = load_elastic(out / "elastic.pt")
    assert [int(r["trial"]) for r in rows] == [lv.trial for lv in loaded.levels]
    for index, row in enumerate(rows):
        accuracy = evaluate(loaded.set_width(index), digits.loader("val", 512), torch.device("cpu")).accuracy
        assert accuracy == float(row["val_acc"]) == loaded.levels[index].metrics["val_acc"]
        assert int(row["macs"]) == loaded.levels[index].macs
    code, err = _main(monkeypatch, capsys, *args, "--out", str(out), "--no-progress")
    assert code == 2 and err.startswith("error: ") and "already exists" in err, err


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["prune-search", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--trial-numbers", "3"], "at least 2 widths"),
        (["--front", "1"], "at least 2 widths"),
        (["--trial-numbers", "0,99999"], "no trial 99999"),
        (["--trial-numbers", "0,x"], "trial numbers separated by commas"),
        (["--trial-numbers", "0,1,0"], "names a trial twice"),
        (["--front", "2", "--trial-numbers", "0,1"], "one way"),
        (["--front", "2", "--nest", "mid"], "--nest must be one of"),
        (["--front", "2", "--checkpoint", "/nonexistent/base.pt"], "missing on this machine"),
    ],
)
def test_bad_input_is_one_line(study, tmp_path, monkeypatch, capsys, flags, needle):
    _, url = study
    code, err = _main(monkeypatch, capsys, "elastic", "--study", "el", "--storage", url, "--out", str(tmp_path), *flags)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_a_checkpoint_other_than_the_studys_is_refused(study, tmp_path, digits_checkpoint):
    handle, _ = study
    other = tmp_path / "other.pt"
    other.write_bytes(digits_checkpoint.read_bytes() + b"\0")
    with pytest.raises(PruneSearchError, match="not the study's base checkpoint"):
        make_elastic(handle, pick_trials(handle, 2, None), tmp_path / "out", checkpoint=other)


def test_load_elastic_refuses_missing_and_foreign_files(tmp_path, digits_checkpoint):
    with pytest.raises(PruneSearchError, match="does not exist"):
        load_elastic(tmp_path / "none.pt")
    with pytest.raises(PruneSearchError, match="not an elastic checkpoint"):
        load_elastic(digits_checkpoint)


def test_bn_recalibration_changes_only_each_levels_own_statistics(study, base, digits):
    elastic, _ = _elastic(study[0], base, 2)
    before = [elastic.level_state(level) for level in range(2)]
    recalibrate_levels(elastic, digits, 2, torch.device("cpu"))
    for level in range(2):
        after = elastic.level_state(level)
        for key, value in after.items():
            statistic = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
            assert torch.equal(value, before[level][key]) != statistic, key
