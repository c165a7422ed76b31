"""``timm:NAME`` models: built with random weights for the dataset, exact costs, trusted like ``tv:``."""

import json
import sys

import pytest
import torch
from model_checks import randomised, reference_cost

from prune_search.errors import PruneSearchError
from prune_search.evaluators import CostModel, compute_importance, materialize
from prune_search.finalize.export import export, load_pruned
from prune_search.models import ModelSpec, build_model, check_trusted, is_named_model
from prune_search.models.torchvision_zoo import ResizeInput
from prune_search.space import CandidateBatch, PruningSpace

pytest.importorskip("timm", reason="timm is an optional extra: pip install 'prune-search[timm]'")

SMALL = ["timm:resnet18", "timm:mobilenetv3_small_050", "timm:regnetx_002"]


@pytest.mark.parametrize("name", SMALL)
def test_small_timm_models_map_one_channel_32px_images_to_logits_with_exact_costs(name):
    torch.manual_seed(0)
    spec = ModelSpec(name, 1, 10, 32)
    model = randomised(build_model(spec))
    assert not isinstance(model, ResizeInput)
    example = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert model(example).shape == (2, 10)
    space = PruningSpace.from_model(model, example)
    assert len(space.groups) > 1
    importance = compute_importance(model, space, "l2")
    candidates = CandidateBatch.cat([space.smallest(), space.sample(3, seed=7)])
    macs, params = CostModel(space)(candidates)
    for row in range(len(candidates)):
        pruned, _ = materialize(model, space, importance, candidates[row])
        assert reference_cost(pruned, example[:1]) == (int(macs[row]), int(params[row])), row
    assert CostModel(space).base() == reference_cost(model, example[:1])
    assert CostModel(space).unmodelled_macs == 0  # every counted MAC in a modelled layer


def test_a_fixed_size_transformer_is_built_for_the_dataset_size():
    model = build_model(ModelSpec("timm:vit_tiny_patch16_224", 1, 10, 32))
    assert not isinstance(model, ResizeInput)
    assert model.patch_embed.proj.in_channels == 1
    assert model.pos_embed.shape[1] == 1 + (32 // 16) ** 2  # class token + a 2×2 patch grid
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_inputs_too_small_for_the_architecture_are_resized_to_timms_default_size():
    model = build_model(ModelSpec("timm:inception_v3", 1, 10, 32))
    assert isinstance(model, ResizeInput)
    assert model.size == 299
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_an_exported_timm_model_loads_from_its_files_without_a_trusted_factory(tmp_path):
    torch.manual_seed(0)
    spec = ModelSpec("timm:resnet18", 1, 10, 32)
    model = randomised(build_model(spec))
    example = torch.randn(2, 1, 32, 32)
    space = PruningSpace.from_model(model, example)
    pruned, plan = materialize(model, space, compute_importance(model, space, "l2"), space.sample(1, seed=3))
    export(pruned, plan, spec, {}, tmp_path)
    assert is_named_model(spec.name)
    check_trusted(spec, None, "the test's model.json")  # no trusted_factory needed: timm's own code
    loaded = load_pruned(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(example), pruned.eval()(example))


def _one_line_error(spec: ModelSpec) -> str:
    with pytest.raises(PruneSearchError) as info:
        build_model(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_unknown_timm_name_names_close_matches():
    message = _one_line_error(ModelSpec("timm:resnet181", 1, 10, 32))
    assert "unknown timm model 'timm:resnet181'" in message
    assert "timm:resnet18" in message


@pytest.mark.parametrize(
    "name", ["timm:hf-hub:timm/resnet18.a1_in1k", "timm:local-dir:/tmp/somewhere", "timm:resnet18.a1_in1k"]
)
def test_names_that_would_download_or_read_files_are_unknown(name):
    assert "unknown timm model" in _one_line_error(ModelSpec(name, 1, 10, 32))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"pretrained": True}, "pretrained"),
        ({"checkpoint_path": "/tmp/evil.pth"}, "checkpoint_path"),
        ({"pretrained_cfg_overlay": {"file": "/tmp/evil.pth"}}, "pretrained_cfg_overlay"),
        ({"num_classes": 3}, "num_classes"),
        ({"no_such_option": 1}, "rejected the model options"),
    ],
)
def test_options_that_load_weights_or_are_unknown_are_refused_in_one_line(options, needle):
    assert needle in _one_line_error(ModelSpec("timm:resnet18", 1, 10, 32, options))


def test_model_options_are_accepted_and_stored_specs_must_be_plain_data():
    model = build_model(ModelSpec("timm:resnet18", 3, 10, 32, {"drop_rate": 0.25}))
    assert model.drop_rate == 0.25
    stored = json.loads(json.dumps(ModelSpec("timm:resnet18", 3, 10, 32, {"drop_rate": 0.25}).to_dict()))
    assert ModelSpec.from_dict(stored).options == {"drop_rate": 0.25}
    stored["options"] = {"drop_rate": object()}
    with pytest.raises(PruneSearchError, match="not plain data"):
        ModelSpec.from_dict(stored)


def test_without_timm_a_timm_name_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    message = _one_line_error(ModelSpec("timm:resnet18", 1, 10, 32))
    assert "pip install 'prune-search[timm]'" in message
