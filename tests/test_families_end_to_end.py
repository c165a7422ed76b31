"""A grouped-convolution network (RegNet) goes through the whole CLI: train, start, finalize, load."""

import json

import torch
from cli_helpers import run_cli

from prune_search.finalize.export import load_pruned


def test_a_regnet_is_searched_finalized_and_loaded_with_its_channel_groups_whole(tmp_path):
    checkpoint, storage, out = tmp_path / "regnet.pt", f"sqlite:///{tmp_path / 'regnet.db'}", tmp_path / "final"
    model = ["--model", "tv:regnet_x_400mf", "--dataset", "digits"]
    for args in (
        ["train", *model, "--epochs", "1", "--lr", "0.01", "--out", str(checkpoint)],
        ["start", "--study", "r", "--storage", storage, *model, "--checkpoint", str(checkpoint), "--trials", "200",
         "--proxy", "taylor_loss"],
        ["finalize", "--study", "r", "--storage", storage, "--max-macs", "60%", "--pick", "best", "--epochs", "1",
         "--out", str(out)],
    ):  # fmt: skip
        result = run_cli(*args, "--no-progress", "--device", "cpu")
        assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "result.json").read_text())
    assert record["macs"] <= 0.6 * record["base_macs"] and record["macs_reduction_pct"] >= 40
    pruned = load_pruned(out)
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert convs and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in convs)
    with torch.no_grad():
        assert pruned.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
