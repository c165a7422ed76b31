"""The batched accuracy evaluator equals, per candidate, the physically pruned network with re-estimated BN."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators import AdaptiveBNEvaluator, BatchedEvaluator, compute_importance, materialize
from prune_search.space import PruningSpace
from prune_search.training import load_model


@pytest.fixture(scope="module")
def setup(digits_checkpoint, digits):
    model, _ = load_model(digits_checkpoint)
    model.eval()
    space = PruningSpace.from_model(model, torch.randn(2, 1, 8, 8))
    importance = compute_importance(model, space, "taylor", batches=digits.loader("train", 128), max_batches=2)
    loader = iter(digits.loader("train", 64, shuffle=True, seed=9))
    batches = [next(loader) for _ in range(2)]
    return model, space, importance, batches


def _physical(model: nn.Module, batches, reference) -> dict[str, float]:
    """Scores of a physically pruned model whose BatchNorms use each batch's own statistics (torch's own losses)."""
    model.train()  # BatchNorm on batch statistics; these models have no dropout
    with torch.no_grad():
        logits = torch.cat([model(inputs) for inputs, _ in batches]).double()
    targets = torch.cat([t for _, t in batches])
    ref = torch.cat(reference)
    return {
        "accuracy": float((logits.argmax(1) == targets).double().mean()),
        "loss": float(F.cross_entropy(logits, targets)),
        "kl": float(F.kl_div(torch.log_softmax(logits, 1), ref, log_target=True, reduction="batchmean")),
    }


@pytest.mark.parametrize("mode", ["masked", "physical"])
def test_each_candidate_scores_as_its_pruned_network_with_batch_statistics(setup, mode):
    model, space, importance, batches = setup
    candidates = space.sample(7, seed=4)
    evaluator = BatchedEvaluator(model, space, importance, batches, chunk=3, mode=mode)
    scores = evaluator(candidates)
    with torch.no_grad():
        reference = [torch.log_softmax(model(x).double(), 1) for x, _ in batches]
    for row in range(len(candidates)):
        pruned, _ = materialize(model, space, importance, candidates[row : row + 1])
        expected = _physical(pruned, batches, reference)
        assert float(scores["accuracy"][row]) == pytest.approx(expected["accuracy"], abs=1e-9)
        assert float(scores["loss"][row]) == pytest.approx(expected["loss"], rel=1e-4, abs=1e-5)
        assert float(scores["kl"][row]) == pytest.approx(expected["kl"], rel=1e-4, abs=1e-5)
    assert float(scores["kl"].min()) > 0 and not torch.equal(scores["kl"], scores["kl"][0].expand(7))
    one_by_one = AdaptiveBNEvaluator(model, space, importance, [], batches, batch_statistics=True)
    assert torch.allclose(one_by_one.measure(candidates)["kl"], scores["kl"], rtol=1e-4, atol=1e-6)


def test_chunking_does_not_change_scores_and_the_model_is_untouched(setup):
    model, space, importance, batches = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    candidates = space.sample(5, seed=1)
    whole = BatchedEvaluator(model, space, importance, batches, chunk=5, mode="masked")(candidates)
    single = BatchedEvaluator(model, space, importance, batches, chunk=1, mode="masked")(candidates)
    for name in ("accuracy", "loss", "kl"):
        assert torch.allclose(whole[name], single[name], rtol=1e-5, atol=1e-7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())
    assert BatchedEvaluator(model, space, importance, batches).mode == "physical"  # the faster one on a CPU
    with pytest.raises(PruneSearchError, match="modes are auto, masked, physical"):
        BatchedEvaluator(model, space, importance, batches, mode="fast")
