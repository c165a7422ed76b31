import sys
import textwrap

import pytest
import torch

from prune_search.errors import PruneSearchError
from prune_search.evaluators import compute_importance, materialize
from prune_search.finalize.export import export, load_pruned
from prune_search.models import ModelSpec, available_models, build_model
from prune_search.models.torchvision_zoo import ResizeInput
from prune_search.space import PruningSpace

INPUTS = {"digits": (1, 8, 10), "fashion-mnist": (1, 28, 10), "cifar": (3, 32, 100)}
MODELS = [
    ("resnet20", {}),
    ("resnet32", {}),
    ("resnet56", {}),
    ("resnet110", {}),
    ("vgg16_bn", {}),
    ("vgg16_bn", {"head": "512"}),
    ("vgg16_bn", {"head": "linear", "width_mult": 0.25}),
    ("mlp", {}),
    ("tv:resnet18", {}),
    ("tv:mobilenet_v2", {}),
]


@pytest.mark.parametrize("dataset", INPUTS)
@pytest.mark.parametrize(("name", "options"), MODELS)
def test_every_zoo_model_maps_dataset_images_to_class_logits(name, options, dataset):
    channels, size, classes = INPUTS[dataset]
    model = build_model(ModelSpec(name, channels, classes, size, options)).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, channels, size, size))
    assert logits.shape == (3, classes)
    assert torch.isfinite(logits).all()


def test_zoo_lists_the_literature_models():
    assert {"resnet20", "resnet32", "resnet56", "resnet110", "vgg16_bn", "mlp"} <= set(available_models())


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cifar_resnets_have_their_published_sizes():
    sizes = {name: _params(build_model(ModelSpec(name, 3, 10, 32))) for name in ("resnet20", "resnet56", "resnet110")}
    # He et al. 2016 Table 6: 0.27M, 0.85M, 1.7M parameters (1×1 shortcuts add a few thousand).
    assert 0.26e6 < sizes["resnet20"] < 0.28e6
    assert 0.84e6 < sizes["resnet56"] < 0.87e6
    assert 1.70e6 < sizes["resnet110"] < 1.75e6


def linears(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]


def test_vgg16_heads_match_their_layouts():
    seed_head = build_model(ModelSpec("vgg16_bn", 3, 10, 32))
    # the seed project's VGG16-BN with the 512→4096→4096→10 head: 33.6467 M parameters
    assert round(_params(seed_head) / 1e6, 4) == 33.6467
    assert linears(seed_head) == [(512, 4096), (4096, 4096), (4096, 10)]
    assert linears(build_model(ModelSpec("vgg16_bn", 3, 10, 32, {"head": "512"}))) == [(512, 512), (512, 10)]
    assert linears(build_model(ModelSpec("vgg16_bn", 3, 10, 32, {"head": "linear"}))) == [(512, 10)]


def test_mlp_default_is_784_256_64_10_on_28px_inputs():
    model = build_model(ModelSpec("mlp", 1, 10, 28))
    assert linears(model) == [(784, 256), (256, 64), (64, 10)]


def test_torchvision_model_adapts_input_channels():
    model = build_model(ModelSpec("tv:resnet18", 1, 7, 28))
    assert model.conv1.in_channels == 1
    assert model.fc.out_features == 7


def test_a_torchvision_vit_gets_inputs_of_the_size_it_was_built_for():
    model = build_model(ModelSpec("tv:vit_b_16", 1, 10, 28)).eval()  # built for 224 px
    assert isinstance(model, ResizeInput) and model.size == 224  # not 384, the largest of its published weights
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_an_export_keeps_the_state_dict_versions_a_model_checks_on_loading(tmp_path):
    spec = ModelSpec("tv:mnasnet0_5", 1, 10, 32)  # MNASNet refuses a state_dict without its version
    model = build_model(spec).eval()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 32, 32))
    pruned, plan = materialize(model, space, compute_importance(model, space, "l2"), space.sample(1, seed=0))
    export(pruned, plan, spec, {}, tmp_path)
    example = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_pruned(tmp_path)(example), pruned.eval()(example))


def test_user_factory_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny(in_channels, num_classes, image_size, hidden=8):
                return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, hidden),
                                     nn.ReLU(), nn.Linear(hidden, num_classes))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ModelSpec("my_nets:tiny", 1, 10, 8, {"hidden": 5})
    with pytest.raises(PruneSearchError, match="trusted_factory='my_nets:tiny'"):
        build_model(spec)
    assert "my_nets" not in sys.modules
    model = build_model(spec, trusted_factory="my_nets:tiny")
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert model[1].out_features == 5
    sys.modules.pop("my_nets", None)


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("resnet21", {}, "resnet20, resnet32, resnet56, resnet110, vgg16_bn, mlp"),
        ("tv:not_a_model", {}, "tv:<one of"),
        ("no_such_package.mod:factory", {}, "PYTHONPATH"),
        ("resnet20", {"head": "512"}, "valid options: width_mult"),
        ("vgg16_bn", {"head": "2048"}, "head must be one of 4096, 512, linear"),
    ],
)
def test_bad_model_names_and_options_say_what_is_valid(name, options, needle):
    with pytest.raises(PruneSearchError) as info:
        build_model(ModelSpec(name, 1, 10, 8, options), trusted_factory=name)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
