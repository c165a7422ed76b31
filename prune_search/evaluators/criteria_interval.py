"""Interval-adjoint significance of the hidden units of fully-connected networks (``interval_adjoint``).

The interval-adjoint method of one of the projects prune-search grew from, with its bugs fixed:

1. Input box ``[x] = [lo, hi]``: per input element, the min and max over the calibration
   batches of the train split *as the model sees them*, i.e. after the dataset's
   normalisation. Seed 001 took the raw 0–255 pixels while its model saw [0, 1/255].
2. Interval forward pass through the chain Flatten / Linear / ReLU. A Linear layer gives the
   pre-activation interval ``[z] = W⁺[x] + W⁻[x] + b``, with ``W⁺ = max(W, 0)`` and
   ``W⁻ = min(W, 0)``: ``z_lo = W⁺ x_lo + W⁻ x_hi + b``, ``z_hi = W⁺ x_hi + W⁻ x_lo + b``.
   ReLU clamps both bounds at 0.
3. Interval reverse (adjoint) sweep. The output adjoint is seeded with ``[−1, 1]`` on every
   logit: the range of ``∂CE/∂z_k = softmax_k(z) − 1[k = y]`` over every input and label, so
   the interval adjoints bound the gradient of the loss itself. Seed 001 seeded ``[1, 1]``, the
   gradient of Σ logits. Cross-entropy is invariant to adding one constant to all logits, so
   that seed measures the one direction the loss ignores. A unit whose outgoing weights sum
   to 0 over the classes gets adjoint 0 there, however much it separates them. A Linear layer
   maps ``[ā_z]`` to ``[ā_x] = Wᵀ[ā_z]`` by the same W⁺/W⁻ split. A ReLU multiplies by its
   derivative interval: [1, 1] where ``x_lo > 0``, [0, 0] where ``x_hi ≤ 0``, [0, 1] otherwise.
4. Significance of hidden unit ``j`` of a Linear layer:
   ``S_j = width([z_j]) · max(|ā_lo_j|, |ā_hi_j|)``, an upper bound on how far the unit's
   first-order contribution to the loss can move over the box.

Only chains of Linear, ReLU, Flatten, Identity and Dropout (eval mode) are supported.
Anything else raises a one-line error that names the first unsupported layer.
"""

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prune_search.errors import PruneSearchError
from prune_search.evaluators.channels import Batches, to_root
from prune_search.space import PruningSpace

SUPPORTED = (nn.Linear, nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout)
Interval = tuple[Tensor, Tensor]


@dataclass
class IntervalSweep:
    """Bounds of one sweep, per Linear layer (qualified name), all float64 ``[out_features]``.

    ``pre``: the pre-activation interval ``[z]``; ``adjoint``: the interval adjoint of ``z``.
    """

    pre: dict[str, Interval]
    adjoint: dict[str, Interval]

    def significance(self) -> dict[str, Tensor]:
        """``width([z_j]) · max(|ā_lo_j|, |ā_hi_j|)`` per Linear layer, float64 ``[out_features]``."""
        out = {}
        for name, (lo, hi) in self.pre.items():
            a_lo, a_hi = self.adjoint[name]
            out[name] = (hi - lo) * torch.maximum(a_lo.abs(), a_hi.abs())
        return out


def _unsupported(model: nn.Module, detail: str) -> PruneSearchError:
    return PruneSearchError(
        "interval_adjoint supports fully-connected networks (Linear/ReLU); use another criterion for "
        f"{type(model).__name__} ({detail})"
    )


def _chain(model: nn.Module, example: Tensor) -> list[tuple[str, nn.Module]]:
    """The leaf modules one forward pass of ``example`` runs, checked to be a chain of supported layers."""
    for name, module in model.named_modules():
        owns_params = next(module.parameters(recurse=False), None) is not None
        leaf = next(module.children(), None) is None
        if (leaf or owns_params) and not isinstance(module, SUPPORTED):
            raise _unsupported(model, f"layer '{name}' is {type(module).__name__}")
    names = {module: name for name, module in model.named_modules()}
    trace: list[tuple[nn.Module, Tensor, Tensor]] = []
    handles = [
        m.register_forward_hook(lambda m, args, out: trace.append((m, args[0], out)))
        for m in model.modules()
        if next(m.children(), None) is None
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    previous = example
    for module, inputs, output in trace:
        if inputs is not previous:
            raise _unsupported(model, f"layer '{names[module]}' does not take the previous layer's output")
        previous = output
    if result is not previous or not trace:
        raise _unsupported(model, "its output is not the last layer's output")
    linears = [module for module, _, _ in trace if isinstance(module, nn.Linear)]
    if len(set(linears)) != len(linears):
        raise _unsupported(model, "a Linear layer runs twice")
    return [(names[module], module) for module, _, _ in trace]


def input_box(batches: Batches) -> Interval:
    """Per-element min and max of the inputs ``x [B, ...]`` over ``batches``: float64 ``[...]`` each."""
    lo = hi = None
    for inputs, _ in batches:
        x = inputs.detach().to("cpu", torch.float64)
        lo = x.amin(0) if lo is None else torch.minimum(lo, x.amin(0))
        hi = x.amax(0) if hi is None else torch.maximum(hi, x.amax(0))
    if lo is None or hi is None:
        raise PruneSearchError("criterion 'interval_adjoint' needs at least one calibration batch")
    return lo, hi


def _matvec(weight: Tensor, lo: Tensor, hi: Tensor) -> Interval:
    """``weight @ [lo, hi]`` for ``weight [m, k]`` and interval ``[k]``: the W⁺/W⁻ split."""
    positive, negative = weight.clamp(min=0), weight.clamp(max=0)
    return positive @ lo + negative @ hi, positive @ hi + negative @ lo


def _times(a: Interval, b: Interval) -> Interval:
    """Element-wise interval product: min and max of the four bound products."""
    products = torch.stack([a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]])
    return products.amin(0), products.amax(0)


def interval_sweep(
    model: nn.Module, lower: Tensor, upper: Tensor, *, seed_lower: float = -1.0, seed_upper: float = 1.0
) -> IntervalSweep:
    """Interval forward pass over the box ``[lower, upper]``, then the adjoint sweep.

    ``lower``/``upper`` bound one input (``[C, H, W]`` or ``[F]``, as the model sees it). The
    output adjoint is seeded with ``[seed_lower, seed_upper]`` on every output; the default
    ``[−1, 1]`` bounds the cross-entropy gradient (module docstring).
    """
    parameter = next(model.parameters())
    chain = _chain(model, lower.to(parameter.device, parameter.dtype).unsqueeze(0))
    lo, hi = lower.to("cpu", torch.float64), upper.to("cpu", torch.float64)
    inputs: list[Interval] = []
    pre: dict[str, Interval] = {}
    for name, module in chain:
        inputs.append((lo, hi))
        if isinstance(module, nn.Linear):
            if lo.dim() != 1:
                raise _unsupported(model, f"Linear layer '{name}' gets a {lo.dim()}-d input per sample")
            weight = module.weight.detach().to("cpu", torch.float64)
            bias = torch.zeros(weight.shape[0], dtype=torch.float64)
            if module.bias is not None:
                bias = module.bias.detach().to("cpu", torch.float64)
            z_lo, z_hi = _matvec(weight, lo, hi)
            lo, hi = z_lo + bias, z_hi + bias
            pre[name] = (lo, hi)
        elif isinstance(module, nn.ReLU):
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        elif isinstance(module, nn.Flatten):
            lo, hi = module(lo.unsqueeze(0)).squeeze(0), module(hi.unsqueeze(0)).squeeze(0)
    a_lo = torch.full_like(lo, seed_lower)
    a_hi = torch.full_like(hi, seed_upper)
    adjoint: dict[str, Interval] = {}
    for (name, module), (x_lo, x_hi) in zip(reversed(chain), reversed(inputs), strict=True):
        if isinstance(module, nn.Linear):
            adjoint[name] = (a_lo, a_hi)
            a_lo, a_hi = _matvec(module.weight.detach().to("cpu", torch.float64).T, a_lo, a_hi)
        elif isinstance(module, nn.ReLU):
            derivative = ((x_lo > 0).to(torch.float64), (x_hi > 0).to(torch.float64))
            a_lo, a_hi = _times((a_lo, a_hi), derivative)
        elif isinstance(module, nn.Flatten):
            a_lo, a_hi = a_lo.reshape(x_lo.shape), a_hi.reshape(x_hi.shape)
    return IntervalSweep(pre, adjoint)


def interval_adjoint(model: nn.Module, space: PruningSpace, *, batches: Batches, **_: object) -> dict:
    """Significance per group (float64 ``[n]``): its Linear output members' ``S_j``, summed onto root channels."""
    significance = interval_sweep(model, *input_box(batches)).significance()
    out = {}
    for group in space.groups:
        score = torch.zeros(group.size, dtype=torch.float64)
        for member in group.members:
            if member.out and member.module in significance:
                score += to_root(group, member, significance[member.module])
        out[group.name] = score
    return out
