"""Per-group sensitivity scan: val split, allocation by a drop threshold, files, use in a study, bad input."""

import copy
import csv
import json
import re
import statistics
from dataclasses import replace

import optuna
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from prune_search.cli.sensitivity import sensitivity_command
from prune_search.data import DataSpec, load_dataset
from prune_search.errors import PruneSearchError
from prune_search.evaluators import recalibrate_bn
from prune_search.evaluators.adaptive_bn import accuracy
from prune_search.models import ModelSpec, build_model
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.search.codec import CandidateCodec
from prune_search.sensitivity import ScanRow, allocate, create_or_join_with_scan, parse_ratios, read_sensitivity, scaled
from prune_search.sensitivity.allocate import SEED_SCALES
from prune_search.space import CandidateBatch, PruningSpace, SpaceOptions, strategy_param
from prune_search.training import load_model

RATIOS = [0.25, 0.5, 1.0]
FAST = ["--calibration-batches", "2", "--device", "cpu", "--no-progress"]


def _scan(checkpoint, out, *extra: str):
    result = run_cli(
        "sensitivity",
        "--checkpoint",
        str(checkpoint),
        "--ratios",
        ",".join(map(str, RATIOS)),
        "--bn-batches",
        "2",
        "--out",
        str(out),
        *FAST,
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def recal(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("recal")
    return out, _scan(digits_checkpoint, out, "--max-drop", "2").stdout


@pytest.fixture(scope="module")
def model_and_val(digits_checkpoint):
    bundle = load_dataset(DataSpec("digits"))
    model, _ = load_model(digits_checkpoint, ModelSpec("resnet20", 1, 10, 8))
    return model.eval(), bundle


def test_scan_has_a_row_per_group_and_ratio_and_the_full_ratio_is_the_base(recal):
    out, stdout = recal
    result = read_sensitivity(out)
    assert len(result.groups) == 12
    assert [(r.group, r.ratio) for r in result.rows] == [(g, r) for g in result.groups for r in RATIOS]
    for row in result.rows:
        assert row.size == result.groups[row.group]
        assert row.drop_pts == pytest.approx(100 * (result.base_val_acc - row.val_acc))
    full = [r for r in result.rows if r.ratio == 1.0]
    assert all(r.keep == r.size and r.val_acc == result.base_val_acc and r.drop_pts == 0 for r in full)
    assert max(r.drop_pts for r in result.rows) > 5  # some group at 25 % costs accuracy: the scan measures something
    assert "layer2.0.downsample.0" in stdout and "base val accuracy" in stdout


def test_the_base_accuracy_is_the_recalibrated_model_on_val_never_test(recal, model_and_val):
    out, _ = recal
    result = read_sensitivity(out)
    model, bundle = model_and_val
    work = copy.deepcopy(model)
    calibration = [b for _, b in zip(range(2), bundle.loader("train", 128), strict=False)]
    recalibrate_bn(work, calibration, torch.device("cpu"))
    assert result.base_val_acc == accuracy(work, bundle.loader("val", 512), torch.device("cpu"))
    assert result.config["split"] == "val"
    assert result.config["val_samples"] == bundle.sizes()["val"]
    assert result.config["recalibrate_bn"] is True


def test_without_recalibration_the_scan_scores_the_checkpoint_statistics(digits_checkpoint, tmp_path, model_and_val):
    sensitivity_command(
        checkpoint=digits_checkpoint,
        ratios="0.5,1",
        recalibrate_bn=False,
        calibration_batches=2,
        out=tmp_path,
        device="cpu",
        progress=False,
    )
    result = read_sensitivity(tmp_path / "sensitivity.json")
    model, bundle = model_and_val
    assert result.base_val_acc == accuracy(model, bundle.loader("val", 512), torch.device("cpu"))
    assert result.config["recalibrate_bn"] is False
    assert result.config["bn_batches"] == 0


def test_allocation_obeys_the_threshold_and_is_monotone_safe(recal):
    result = read_sensitivity(recal[0])
    allocation = result.allocation
    assert allocation["max_drop"] == 2
    assert allocation == read_sensitivity(recal[0] / "sensitivity.json").allocation
    for group in result.groups:
        rows = sorted((r for r in result.rows if r.group == group), key=lambda r: r.ratio)
        chosen = allocation["ratios"][group]
        assert all(r.drop_pts <= 2 for r in rows if r.ratio >= chosen)
        below = [r for r in rows if r.ratio < chosen]
        assert not below or below[-1].drop_pts > 2
    assert 0 < allocation["macs"] <= allocation["base_macs"]
    assert 0 <= allocation["val_acc"] <= 1


def test_a_dip_below_a_failing_ratio_does_not_qualify():
    def row(ratio: float, drop: float) -> ScanRow:
        return ScanRow("g", 10, ratio, round(10 * ratio), 0.9, drop)

    rows = [row(0.2, 0.5), row(0.4, 3.0), row(0.6, 0.8), row(0.8, 0.1)]
    assert allocate(rows, 1.0) == {"g": 0.6}
    assert allocate(rows, 5.0) == {"g": 0.2}
    assert allocate([row(0.9, 1.5)], 1.0) == {"g": 1.0}
    assert scaled({"g": 0.6, "h": 1.0}, (0.5, 2.0)) == [{"g": 0.8, "h": 1.0}, {"g": 0.2, "h": 1.0}]


def test_csv_and_offline_figure_are_written(recal):
    out, _ = recal
    with open(out / "sensitivity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["group", "size", "ratio", "keep", "val_acc", "drop_pts"]
    assert len(rows) == 12 * len(RATIOS)
    page = (out / "sensitivity.html").read_text()
    assert "<script src=" not in page and len(page) > 1_000_000  # plotly.js inlined, nothing fetched
    assert "layer3.0.downsample.0" in page and "allowed drop 2 pts" in page


def test_bad_scan_input_gives_one_line(tmp_path):
    assert_one_line_error(run_cli("sensitivity", "--out", str(tmp_path), "--ratios", "0,0.5"), "--ratios", "(0, 1]")
    options = SpaceOptions()
    for text, needle in [("0.5,1.5", "(0, 1]"), ("0.33", "not on the keep-ratio grid"), ("a,b", "comma-separated")]:
        with pytest.raises(PruneSearchError, match=re.escape(needle)) as info:
            parse_ratios(text, options)
        assert "\n" not in str(info.value)
    assert parse_ratios("0.9,0.1,0.5,0.1", options) == [0.1, 0.5, 0.9]
    with pytest.raises(PruneSearchError, match="unknown criterion 'nope'"):
        sensitivity_command(criterion="nope", out=tmp_path)


def _start(url: str, study: str, checkpoint, *extra: str):
    args = ["start", "--study", study, "--storage", url, "--checkpoint", str(checkpoint), "--trials", "150"]
    return run_cli(*args, "--population", "40", "--evaluations", "0", *FAST, *extra)


def _rethresholded(recal, tmp_path):
    """The scan's allocation at the median drop of the 25 % rows: some groups floored low, others high."""
    result = read_sensitivity(recal[0])
    threshold = statistics.median(r.drop_pts for r in result.rows if r.ratio == 0.25)
    result.allocation = {**result.allocation, "max_drop": threshold, "ratios": allocate(result.rows, threshold)}
    result.write(tmp_path / "median")
    return tmp_path / "median", result.allocation["ratios"]


def test_bound_floors_every_trial_of_the_study_and_of_joining_workers(recal, digits_checkpoint, tmp_path):
    folder, ratios = _rethresholded(recal, tmp_path)
    assert len(set(ratios.values())) > 1 and max(ratios.values()) > 0.25
    url = f"sqlite:///{tmp_path / 'bound.db'}"
    first = _start(url, "bound", digits_checkpoint, "--sensitivity", str(folder), "--sensitivity-use", "bound")
    assert first.returncode == 0, first.stderr
    handle, created = create_or_join(url, "bound", StartOptions(), device="cpu", progress=False)
    assert not created
    run_worker(handle, 250, seed=1)
    assert handle.config["sensitivity"]["use"] == "bound"
    assert handle.config["space"]["group_min_ratio"] == ratios
    sizes = dict(zip(handle.space.names, handle.space.sizes.tolist(), strict=True))
    floors = {name: max(1, round(ratios[name] * n)) for name, n in sizes.items()}
    trials = optuna.load_study(study_name="bound", storage=url).trials
    assert len(trials) == 250
    codec = CandidateCodec(handle.space)
    keeps = [codec.keep_of(trial.user_attrs) for trial in trials]
    for trial, keep in zip(trials, keeps, strict=True):
        assert all(keep[name] >= floors[name] for name in sizes), trial.number
    low = [name for name in sizes if ratios[name] == 0.25]
    assert any(keep[name] == floors[name] for keep in keeps for name in low)
    with pytest.raises(PruneSearchError, match="used as bound"):
        create_or_join_with_scan(url, "bound", StartOptions(), recal[0], device="cpu", progress=False)


def test_seed_puts_the_allocation_and_its_scaled_variants_into_generation_0(recal, digits_checkpoint, tmp_path):
    url = f"sqlite:///{tmp_path / 'seed.db'}"
    options = StartOptions(evaluations=0, checkpoint=digits_checkpoint, population=40, calibration_batches=2)
    handle, _ = create_or_join_with_scan(url, "seeded", options, recal[0], device="cpu", progress=False)
    run_worker(handle, 100)
    allocation = read_sensitivity(recal[0]).allocation
    assert handle.config["sensitivity"]["use"] == "seed"
    assert handle.config["seeds"][0] == allocation["ratios"]
    assert len(handle.config["seeds"]) == 1 + len(SEED_SCALES)
    assert handle.config["space"]["group_min_ratio"] == {}
    trials = optuna.load_study(study_name="seeded", storage=url).trials
    space = handle.space
    codec = CandidateCodec(space)
    seeded = [t for t in trials if codec.keep_of(t.user_attrs) == allocation["keep"]]
    assert len(seeded) == 1
    assert seeded[0].user_attrs["generation"] == 0
    assert {seeded[0].params[strategy_param(name)] for name in space.names} == {"min"}
    seeds = torch.tensor([[s[name] for name in space.names] for s in handle.config["seeds"]], dtype=torch.float64)
    expected = space.level_keep_counts().gather(1, space.levels_at(seeds).T).T.tolist()
    first = [list(codec.keep_of(t.user_attrs).values()) for t in trials if t.user_attrs["generation"] == 0]
    assert all(keep in first for keep in expected)
    assert len({tuple(keep) for keep in expected}) > 2


def test_a_sensitivity_file_of_another_model_is_refused(recal, digits_checkpoint, tmp_path):
    data = json.loads((recal[0] / "sensitivity.json").read_text())
    data["groups"][3]["size"] = 99
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(data))
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    result = _start(url, "bad", digits_checkpoint, "--sensitivity", str(bad))
    assert_one_line_error(result, "does not match this model", "layer1.2.conv1", "99")
    for scan, use, needle in [
        (tmp_path / "nowhere", None, "no sensitivity file"),
        (recal[0], "both", "--sensitivity-use must be seed or bound"),
        (None, "bound", "--sensitivity-use needs --sensitivity"),
    ]:
        with pytest.raises(PruneSearchError, match=needle):
            create_or_join_with_scan(url, "bad", StartOptions(), scan, use, device="cpu", progress=False)
    (tmp_path / "not.json").write_text("{}")
    with pytest.raises(PruneSearchError, match="not a prune-search sensitivity file"):
        read_sensitivity(tmp_path / "not.json")


def test_group_floors_hold_in_every_path_of_the_space():
    model = build_model(ModelSpec("resnet20", 1, 10, 8)).eval()
    plain = PruningSpace.from_model(model, torch.randn(2, 1, 8, 8))
    space = PruningSpace(
        plain.structure, replace(plain.options, group_min_ratio={"conv1": 0.5, "layer3.0.conv1": 0.33})
    )
    floor = dict(zip(space.names, space.floor().tolist(), strict=True))
    assert floor["conv1"] == 8 and floor["layer3.0.conv1"] == 22  # 0.33·64 = 21 is reached first at grid 0.35
    assert space.floor().tolist()[2:8] == plain.floor().tolist()[2:8]
    sample = space.sample(300, seed=0)
    space.validate(sample)
    assert int(sample.keep[:, 0].min()) == 8 and int(sample.keep[:, 8].min()) == 22
    assert space.distributions()["ratio/conv1"].low == 0.5
    rows = space.to_params(sample)
    assert torch.equal(CandidateBatch.cat([space.from_params(r) for r in rows]).keep, sample.keep)
    with pytest.raises(PruneSearchError, match="below its floor of 8"):
        space.validate(plain.smallest())
    with pytest.raises(PruneSearchError, match="group 'nope'"):
        PruningSpace(plain.structure, replace(plain.options, group_min_ratio={"nope": 0.5}))
    assert PruningSpace.from_json(space.to_json()).options == space.options
