"""Networks beyond plain convolutions go through the whole CLI: train, start, finalize, load (RegNet, ViT)."""

import json

import pytest
import torch
from cli_helpers import run_cli

from prune_search.finalize.export import load_pruned


def _train_search_finalize(tmp_path, model: list[str], max_macs: str) -> dict:
    """``train`` (1 epoch), ``start`` (200 trials, Taylor proxy) and ``finalize`` (best pick, 1 epoch) on digits;
    the finalized record."""
    checkpoint, storage, out = tmp_path / "base.pt", f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "final"
    model = [*model, "--dataset", "digits"]
    for args in (
        ["train", *model, "--epochs", "1", "--lr", "0.01", "--out", str(checkpoint)],
        ["start", "--study", "s", "--storage", storage, *model, "--checkpoint", str(checkpoint), "--trials", "200",
         "--proxy", "taylor_loss"],
        ["finalize", "--study", "s", "--storage", storage, "--max-macs", max_macs, "--pick", "best", "--epochs", "1",
         "--out", str(out)],
    ):  # fmt: skip
        result = run_cli(*args, "--no-progress", "--device", "cpu")
        assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_a_regnet_is_searched_finalized_and_loaded_with_its_channel_groups_whole(tmp_path):
    record = _train_search_finalize(tmp_path, ["--model", "tv:regnet_x_400mf"], "60%")
    assert record["macs"] <= 0.6 * record["base_macs"] and record["macs_reduction_pct"] >= 40
    pruned = load_pruned(tmp_path / "final")
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert convs and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in convs)
    with torch.no_grad():
        assert pruned.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_a_vision_transformer_is_searched_finalized_and_loaded_with_its_head_counts_consistent(tmp_path):
    pytest.importorskip("timm", reason="timm is an optional extra: pip install 'prune-search[timm]'")
    options = [a for o in ("patch_size=2", "depth=2", "embed_dim=32", "num_heads=4") for a in ("--model-option", o)]
    record = _train_search_finalize(tmp_path, ["--model", "timm:vit_tiny_patch16_224", *options], "50%")
    assert record["macs"] <= 0.5 * record["base_macs"]
    pruned = load_pruned(tmp_path / "final")
    blocks = [m for m in pruned.modules() if hasattr(m, "qkv")]
    assert len(blocks) == 2 and all(b.qkv.out_features == 3 * b.num_heads * b.head_dim for b in blocks)
    with torch.no_grad():
        assert pruned.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)
