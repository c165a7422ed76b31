"""MACs of running a model, counted by torch: the reference every analytic cost is checked against."""

from typing import Any

import torch
from torch import Tensor, nn


def _cpu_attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _native_mha_flops(
    query: Any,
    key: Any,
    value: Any,
    embed_dim: int,
    heads: int,
    qkv_weight: Any,
    qkv_bias: Any,
    proj_weight: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    batch, length, _ = query
    sources = key[1]
    width, inputs = qkv_weight[0] // 3, qkv_weight[1]
    projections = batch * (length + 2 * sources) * width * inputs + batch * length * proj_weight[0] * proj_weight[1]
    return 2 * (projections + 2 * batch * length * sources * width)


def counted_macs(model: nn.Module, example: Tensor) -> int:
    """MACs of running ``model`` on ``example`` (``[B, C, H, W]``), counted by torch: ``FlopCounterMode``
    total ÷ 2, with PyTorch's fused CPU attention kernels (scaled dot-product attention, and
    ``nn.MultiheadAttention``'s inference path) counted like their linear layers and matrix products (torch
    counts only the CUDA kernels). The definition :class:`~prune_search.evaluators.cost.CostModel`
    computes analytically, for ``B`` = 1. The model runs in whatever mode it is in."""
    from torch.utils.flop_counter import FlopCounterMode

    fused = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
        torch.ops.aten._native_multi_head_attention: _native_mha_flops,
    }
    with FlopCounterMode(display=False, custom_mapping=fused) as counter, torch.no_grad():
        model(example)
    return counter.get_total_flops() // 2
