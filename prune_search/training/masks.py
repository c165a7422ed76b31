"""Fine-grained (unstructured) magnitude pruning with persistent masks.

Prunable tensors are the weights (``dim > 1``) of Conv and Linear layers; the classifier
(the last Conv/Linear the forward pass runs) is left dense unless asked for explicitly.
A tensor with ``numel`` entries at sparsity ``s`` loses exactly ``k = round(numel·s)``
entries, the smallest by |w|; ties at the threshold are broken by flat index (lower index
pruned first), so exactly ``k`` entries go even when many weights are equal. ``s = 0``
keeps everything; ``s = 1`` is refused, and when the rounding would remove every entry of
a small tensor, one entry (the largest) is kept, so no layer is ever cut off entirely.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.training.loop import StepHook

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def check_sparsity(value: float, what: str = "--sparsity") -> float:
    """``value`` if it is a valid sparsity in [0, 1), else a one-line error."""
    if not 0 <= value < 1:
        raise PruneSearchError(f"{what} must be in [0, 1) (share of weights set to zero), got {value}")
    return value


def pruned_count(numel: int, sparsity: float) -> int:
    """Entries a tensor of ``numel`` entries loses at ``sparsity``: ``round(numel·s)``, at most ``numel − 1``."""
    check_sparsity(sparsity)
    return min(round(numel * sparsity), numel - 1)


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Boolean keep-mask shaped like ``weight``: False on exactly :func:`pruned_count` smallest-|w| entries."""
    k = pruned_count(weight.numel(), sparsity)
    order = torch.sort(weight.detach().abs().flatten(), stable=True).indices
    keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    keep[order[:k]] = False
    return keep.view_as(weight)


def classifier_name(model: nn.Module, example: Tensor) -> str:
    """Qualified name of the last Conv/Linear that runs in a forward pass on ``example`` ``[B, C, H, W]``."""
    names = {module: name for name, module in model.named_modules()}
    ran: list[str] = []
    handles = [
        m.register_forward_hook(lambda m, *_: ran.append(names[m])) for m in model.modules() if isinstance(m, PRUNABLE)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not ran:
        raise PruneSearchError("the model has no Conv or Linear layer to sparsify")
    return ran[-1]


def prunable_layers(model: nn.Module) -> list[str]:
    """Names of the Conv/Linear modules whose weight has ``dim > 1``, in module order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE) and getattr(module, "weight", None) is not None and module.weight.dim() > 1
    ]


def layer_sparsities(
    model: nn.Module,
    classifier: str,
    sparsity: float,
    overrides: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Sparsity per prunable layer: ``sparsity`` everywhere but the classifier (0), then ``overrides``.

    ``overrides`` (layer name → sparsity) may name the classifier to prune it too; unknown
    names are one-line errors that list valid ones.
    """
    check_sparsity(sparsity)
    layers = prunable_layers(model)
    result = {name: (0.0 if name == classifier else sparsity) for name in layers}
    for name, value in (overrides or {}).items():
        if name not in result:
            shown = ", ".join(layers[:4]) + (", ..." if len(layers) > 4 else "")
            raise PruneSearchError(f"--sparsity-map names '{name}', which is no Conv/Linear layer ({shown})")
        result[name] = check_sparsity(value, f"sparsity of '{name}'")
    return result


def parse_sparsity_map(text: str | None) -> dict[str, float]:
    """``"layer1.0.conv1=0.9,fc=0.5"`` → ``{"layer1.0.conv1": 0.9, "fc": 0.5}``."""
    result: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            raise PruneSearchError(
                f"--sparsity-map entry '{item}' must look like LAYER=SPARSITY, e.g. layer1.0.conv1=0.9"
            )
        result[name.strip()] = check_sparsity(value, f"sparsity of '{name.strip()}'")
    return result


@dataclass
class MaskSet:
    """Keep-masks (bool, shaped like the weight) by parameter name (``<layer>.weight``).

    :meth:`apply` zeroes the pruned weights; :meth:`after_step` is the training hook that
    re-applies the masks after every optimizer step, to the weights and to the optimizer's
    per-parameter state (e.g. SGD's momentum buffer), so a pruned weight is exactly 0 after
    every step whatever momentum and weight decay do.
    """

    masks: dict[str, Tensor]

    @classmethod
    def from_model(cls, model: nn.Module, sparsities: Mapping[str, float]) -> "MaskSet":
        """Magnitude masks of ``model``'s current weights, one per layer with a sparsity above 0."""
        modules = dict(model.named_modules())
        return cls(
            {
                f"{name}.weight": magnitude_mask(modules[name].weight, value)
                for name, value in sparsities.items()
                if value > 0
            }
        )

    def _parameters(self, model: nn.Module) -> list[tuple[nn.Parameter, Tensor]]:
        params = dict(model.named_parameters())
        return [(params[name], mask.to(params[name].device)) for name, mask in self.masks.items()]

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned entries of ``model``'s weights in place."""
        for parameter, mask in self._parameters(model):
            parameter.mul_(mask)

    def hook(self, model: nn.Module) -> StepHook:
        """The ``after_step(optimizer)`` callback for :func:`prune_search.training.fit.fit`."""
        pairs = self._parameters(model)

        @torch.no_grad()
        def after_step(optimizer: torch.optim.Optimizer) -> None:
            for parameter, mask in pairs:
                parameter.mul_(mask)
                for value in optimizer.state.get(parameter, {}).values():
                    if isinstance(value, Tensor) and value.shape == parameter.shape:
                        value.mul_(mask)

        return after_step

    def state_dict(self) -> dict[str, Tensor]:
        return {name: mask.cpu() for name, mask in self.masks.items()}


def magnitude_masks(
    model: nn.Module,
    example: Tensor,
    sparsity: float,
    overrides: Mapping[str, float] | None = None,
    *,
    include_classifier: bool = False,
) -> MaskSet:
    """Magnitude masks of ``model`` at ``sparsity`` per layer (see :func:`layer_sparsities`).

    ``example`` (``[B, C, H, W]``) finds the classifier, which stays dense unless
    ``include_classifier`` or ``overrides`` names it.
    """
    classifier = classifier_name(model, example)
    sparsities = layer_sparsities(model, classifier, sparsity, overrides)
    if include_classifier and classifier not in (overrides or {}):
        sparsities[classifier] = sparsity
    return MaskSet.from_model(model, sparsities)
