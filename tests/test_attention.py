"""Attention heads as groups: timm ViT blocks prune whole heads (q, k, v and proj together), costs exact."""

import copy

import pytest
import torch
from model_checks import fully_modelled, pruned_exactly, randomised

from prune_search.evaluators import CostModel, compute_importance, materialize
from prune_search.finalize.export import export, load_pruned
from prune_search.models import ModelSpec, build_model
from prune_search.space import CandidateBatch, PruningSpace

pytest.importorskip("timm", reason="timm is an optional extra: pip install 'prune-search[timm]'")

SPEC = ModelSpec("timm:vit_tiny_patch16_224", 1, 10, 32, {"patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 4})


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = randomised(build_model(SPEC))
    example = torch.randn(2, 1, 32, 32)
    return model, example, PruningSpace.from_model(model, example)


def test_each_attention_block_is_a_group_of_heads_beside_the_mlp_and_embedding_groups(vit):
    _, _, space = vit
    sizes = {group.name: group.size for group in space.groups}
    assert sizes["blocks.0.attn.qkv"] == sizes["blocks.1.attn.qkv"] == 4  # one root channel per head
    assert sizes["blocks.0.mlp.fc1"] == 4 * 48
    assert 48 in sizes.values()  # the embedding width, shared by every block
    heads = next(g for g in space.groups if g.name == "blocks.0.attn.qkv")
    assert [(m.module, m.out, heads.multiplicity(m)) for m in heads.members] == [
        ("blocks.0.attn.qkv", True, 3 * 12),
        ("blocks.0.attn.proj", False, 12),
    ]


def test_pruned_vits_cost_what_the_analytic_model_says_attention_products_included(vit):
    model, example, space = vit
    assert fully_modelled(model, space, example)
    for pruned, _ in pruned_exactly(
        model, space, example, CandidateBatch.cat([space.smallest(), space.sample(4, seed=5)])
    ):
        blocks = [m for m in pruned.modules() if hasattr(m, "qkv")]
        assert all(b.qkv.out_features == 3 * b.num_heads * b.head_dim == 3 * b.attn_dim for b in blocks)


def test_removing_a_head_leaves_the_other_heads_as_they_were(vit):
    model, example, space = vit
    g = [group.name for group in space.groups].index("blocks.0.attn.qkv")
    candidate = space.full()
    candidate.keep[0, g] = 3
    pruned, plan = materialize(model, space, compute_importance(model, space, "l2"), candidate)
    (dropped,) = set(range(4)) - set(plan.kept["blocks.0.attn.qkv"])
    assert pruned.blocks[0].attn.num_heads == 3 and pruned.blocks[1].attn.num_heads == 4
    silenced = copy.deepcopy(model)
    with torch.no_grad():  # the dropped head's contribution, through proj, set to zero
        silenced.blocks[0].attn.proj.weight[:, dropped * 12 : (dropped + 1) * 12] = 0
        torch.testing.assert_close(pruned(example), silenced(example))


def test_a_vit_with_fewer_heads_exports_and_loads_back(vit, tmp_path):
    model, example, space = vit
    candidate = space.sample(1, seed=11)
    pruned, plan = materialize(model, space, compute_importance(model, space, "l2"), candidate)
    export(pruned, plan, SPEC, {}, tmp_path)
    loaded = load_pruned(tmp_path)
    assert [b.attn.num_heads for b in loaded.blocks] == [b.attn.num_heads for b in pruned.blocks]
    with torch.no_grad():
        assert torch.equal(loaded(example), pruned.eval()(example))


def test_mobilevit_attention_over_patch_sequences_costs_exactly():
    torch.manual_seed(0)
    model = randomised(build_model(ModelSpec("timm:mobilevit_xxs", 1, 10, 32)))
    example = torch.randn(2, 1, 32, 32)
    space = PruningSpace.from_model(model, example)
    assert sum(g.name.endswith("attn.qkv") for g in space.groups) == 9
    assert fully_modelled(model, space, example)
    pruned_exactly(model, space, example, CandidateBatch.cat([space.smallest(), space.sample(2, seed=1)]))


def test_channel_rounding_and_floors_leave_head_counts_alone(vit):
    model, example, _ = vit
    space = PruningSpace.from_model(model, example, round_to=8, min_keep=16, min_ratio=0.25)
    heads = space.names.index("blocks.0.attn.qkv")
    assert space.smallest().keep[0, heads] == 1 and space.full().keep[0, heads] == 4
    assert int(space.smallest().keep[0, space.names.index("blocks.0.mlp.fc1")]) % 8 == 0


def test_torchvision_multihead_attention_narrows_every_head_equally_with_exact_costs(tmp_path):
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    dims = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 4, "hidden_dim": 48, "mlp_dim": 96}
    model = randomised(VisionTransformer(**dims, num_classes=10))
    example = torch.randn(2, 3, 32, 32)
    space = PruningSpace.from_model(model, example)
    stream = next(g for g in space.groups if any(m.module.endswith("self_attention") for m in g.members))
    assert (stream.size, stream.blocks) == (48, 4)  # the embedding width, kept equal in each of the 4 heads
    assert fully_modelled(model, space, example)
    candidates = CandidateBatch.cat([space.smallest(), space.sample(3, seed=1)])
    for pruned, _ in pruned_exactly(model, space, example, candidates, "taylor"):
        attention = pruned.encoder.layers[0].self_attention
        assert attention.embed_dim == pruned.hidden_dim == 4 * attention.head_dim
        assert pruned.train()(example).shape == (2, 10)  # the training path (no fused kernel) runs too


def test_swin_windows_lose_whole_heads_with_their_relative_position_biases(tmp_path):
    options = {"embed_dim": 16, "depths": [1, 1], "num_heads": [2, 4], "window_size": 4}
    spec = ModelSpec("timm:swin_tiny_patch4_window7_224", 1, 10, 32, options)
    torch.manual_seed(0)
    model = randomised(build_model(spec))
    example = torch.randn(2, 1, 32, 32)
    space = PruningSpace.from_model(model, example)
    heads = next(g for g in space.groups if g.name == "layers.1.blocks.0.attn.qkv")
    assert heads.size == 4 and [m.module for m in heads.parameters] == [
        "layers.1.blocks.0.attn.relative_position_bias_table"
    ]
    assert fully_modelled(model, space, example)
    for pruned, plan in pruned_exactly(
        model, space, example, CandidateBatch.cat([space.smallest(), space.sample(3, seed=4)])
    ):
        attention = pruned.layers[1].blocks[0].attn
        assert attention.relative_position_bias_table.shape[1] == attention.num_heads == len(plan.kept[heads.name])
    export(pruned, plan, spec, {}, tmp_path)
    with torch.no_grad():
        assert torch.equal(load_pruned(tmp_path)(example), pruned.eval()(example))


class OpaqueAttention(torch.nn.Module):
    """Self-attention written with matrix products the space does not model; its projections stay whole."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.qkv = torch.nn.Conv2d(1, 16, 4, stride=4), torch.nn.Linear(16, 48)
        self.mlp, self.out = torch.nn.Linear(16, 32), torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).split(16, -1)
        attended = (q @ k.transpose(1, 2)).softmax(-1) @ v
        return self.out(torch.relu(self.mlp(attended)).mean(1))


def test_counted_macs_outside_modelled_layers_are_a_measured_constant():
    torch.manual_seed(0)
    model, example = OpaqueAttention().eval(), torch.randn(2, 1, 16, 16)
    space = PruningSpace.from_model(model, example)
    assert space.names == ["embed", "mlp"]  # qkv's features pass a split: whole, and so are q·kᵀ and weights·v
    cost = CostModel(space)
    assert cost.unmodelled_macs == 2 * 16 * 16 * 16  # two products of 16 tokens × 16 tokens × 16 features
    pruned_exactly(model, space, example, CandidateBatch.cat([space.smallest(), space.sample(3, seed=0)]))


def test_peer_widths_read_back_from_a_pruned_vit_count_heads(vit):
    from prune_search.finalize.global_pruning import group_widths

    model, _, space = vit
    candidate = space.sample(1, seed=9)
    pruned, _ = materialize(model, space, compute_importance(model, space, "l2"), candidate)
    assert group_widths(pruned, space).tolist() == candidate.keep[0].tolist()


def test_the_search_accuracy_evaluator_scores_vit_candidates_as_their_pruned_networks(vit):
    from prune_search.evaluators import BatchedEvaluator

    model, example, space = vit
    importance = compute_importance(model, space, "l2")
    batches = [(example, torch.tensor([0, 1]))]
    candidates = space.sample(3, seed=6)
    scores = BatchedEvaluator(model, space, importance, batches)(candidates)  # auto: physical (LayerNorm)
    with torch.no_grad():
        reference = torch.log_softmax(model(batches[0][0]).double(), 1)
        for row in range(len(candidates)):
            pruned, _ = materialize(model, space, importance, candidates[row])
            logits = torch.log_softmax(pruned.eval()(batches[0][0]).double(), 1)
            kl = torch.nn.functional.kl_div(logits, reference, log_target=True, reduction="batchmean")
            assert float(scores["kl"][row]) == pytest.approx(float(kl), rel=1e-4, abs=1e-6)


class KeyValueAttention(torch.nn.Module):
    """Attention over keys and values of another width (``kdim``/``vdim``), which prune-search does not prune."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.context = torch.nn.Conv2d(1, 16, 4, stride=4), torch.nn.Conv2d(1, 8, 4, stride=4)
        self.attention = torch.nn.MultiheadAttention(16, 2, kdim=8, vdim=8, batch_first=True)
        self.mlp, self.out = torch.nn.Linear(16, 32), torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, context = self.embed(x).flatten(2).transpose(1, 2), self.context(x).flatten(2).transpose(1, 2)
        attended, _ = self.attention(tokens, context, context, need_weights=False)
        return self.out(torch.relu(self.mlp(attended)).mean(1))


def test_an_unsupported_multihead_attention_is_refused_and_the_layer_it_names_can_be_ignored():
    from prune_search.errors import PruneSearchError

    torch.manual_seed(0)
    model, example = KeyValueAttention().eval(), torch.randn(2, 1, 16, 16)
    with pytest.raises(PruneSearchError) as info:
        PruningSpace.from_model(model, example)
    message = str(info.value)
    assert "\n" not in message and "separate key/value widths" in message and "--ignore-layers attention" in message
    space = PruningSpace.from_model(model, example, ignored_layers=["attention"])
    assert "mlp" in space.names and CostModel(space).unmodelled_macs > 0  # the attention, counted as a constant
    pruned_exactly(model, space, example, CandidateBatch.cat([space.smallest(), space.sample(3, seed=0)]))
