"""The ``fastnas`` peer (NVIDIA ModelOpt's FastNAS) at a MACs budget, on a small digits study."""

import sys

import pytest
import torch

import prune_search.evidence.peers as peers
from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel
from prune_search.evidence.context import Bench
from prune_search.evidence.peers import MISSING_MODELOPT, PEERS, _fit, peer_candidate
from prune_search.search import StartOptions, create_or_join, run_worker
from prune_search.space import CandidateBatch


@pytest.fixture(scope="module")
def base(tmp_path_factory, digits_checkpoint):
    folder = tmp_path_factory.mktemp("peers")
    options = StartOptions(
        evaluations=0, checkpoint=digits_checkpoint, population=20, calibration_batches=2, ratio_step=0.01
    )
    handle, _ = create_or_join(f"sqlite:///{folder / 'study.db'}", "peers", options, device="cpu", progress=False)
    run_worker(handle, 200)
    return Bench.open(handle, torch.device("cpu"))


@pytest.mark.slow
def test_fastnas_widths_become_a_candidate_within_the_budget(base, monkeypatch):
    pytest.importorskip("modelopt.torch.prune")
    # a coarser width grid and smaller calibration batches than the defaults keep this test short
    monkeypatch.setattr(peers, "FASTNAS_RATIOS", (0.25, 0.5, 1.0))
    monkeypatch.setattr(peers, "FASTNAS_CALIBRATION_BATCH_SIZE", 4)
    space, base_macs = base.handle.space, base.handle.config["base"]["macs"]
    assert "fastnas" in PEERS
    candidate = peer_candidate(base, "fastnas", base_macs // 2)
    space.validate(candidate)
    macs = int(CostModel(space)(candidate)[0][0])
    assert 0.25 * base_macs < macs <= base_macs // 2
    keep = candidate.keep[0]
    assert not torch.equal(keep, space.sizes)
    ratios = keep.double() / space.sizes.double()
    assert float(ratios.max() - ratios.min()) > 0.2  # FastNAS prunes layers unevenly, not by one ratio
    assert int(candidate.strategy.unique()) == space.strategies.index("min")
    with pytest.raises(PruneSearchError, match=r"fastnas has no subnet within 2,000 FLOPs .*larger budget"):
        peer_candidate(base, "fastnas", 1000)


def test_a_candidate_over_the_budget_steps_down_the_grid_until_it_fits(base):
    space, base_macs = base.handle.space, base.handle.config["base"]["macs"]
    cost = CostModel(space)
    keep = _fit(space, space.sizes, base_macs // 2, "fastnas")
    strategy = torch.full((1, len(space)), space.strategies.index("min"))
    candidate = CandidateBatch(keep[None], strategy)
    space.validate(candidate)
    assert 0.4 * base_macs < int(cost(candidate)[0][0]) <= base_macs // 2
    assert torch.equal(_fit(space, keep, base_macs // 2, "fastnas"), keep)  # one that fits is kept
    with pytest.raises(PruneSearchError, match="no candidate of this space within"):
        _fit(space, space.sizes, 10, "fastnas")


def test_fastnas_without_modelopt_is_a_one_line_error(base, monkeypatch):
    for name in ("modelopt", "modelopt.torch", "modelopt.torch.prune"):
        monkeypatch.setitem(sys.modules, name, None)  # import of them fails
    with pytest.raises(PruneSearchError) as error:
        peer_candidate(base, "fastnas", base.handle.config["base"]["macs"] // 2)
    assert str(error.value) == MISSING_MODELOPT
    assert "\n" not in str(error.value) and "pip install 'prune-search[peers]'" in str(error.value)
