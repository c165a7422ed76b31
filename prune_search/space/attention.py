"""Multi-head self-attention blocks whose heads prune-search can count and prune.

A block is recognised by what timm's ``Attention`` (ViT, DeiT, MobileViT, ...) and ``WindowAttention``
(Swin) hold: an ``nn.Linear`` ``qkv`` producing ``3 · num_heads · head_dim`` features laid out
``[q | k | v]``, each split into ``num_heads`` contiguous heads of ``head_dim``, and an ``nn.Linear``
``proj`` taking the heads' concatenated ``num_heads · head_dim`` outputs; ``head_dim`` is the block's
attribute or, where it has none, ``qkv``'s width over ``3 · num_heads``. A Swin block's
``relative_position_bias_table`` (``[positions, num_heads]``) holds one column per head.

Pruning a whole head removes its ``3 · head_dim`` qkv rows, its ``head_dim`` proj columns and its bias
column, and leaves every other head's function unchanged (same ``head_dim``, same scale), which
:func:`sync_widths` records in the block afterwards. Blocks with a gate, a norm over the concatenated
heads, or different q/k/v widths are not recognised, and their heads stay unpruned.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

HEAD_TABLES = ("relative_position_bias_table",)  # parameters [positions, num_heads]: one column per head


@dataclass(frozen=True)
class HeadLayout:
    """One attention block: module names, its heads, their width (features per head) and its per-head
    parameters (qualified names, heads on dimension 1)."""

    block: str
    qkv: str
    proj: str
    heads: int
    head_dim: int
    tables: tuple[str, ...] = ()

    def qkv_head(self, feature: int) -> int:
        """The head a qkv output feature (0 … 3·heads·head_dim − 1) belongs to."""
        return (feature % (self.heads * self.head_dim)) // self.head_dim


def _head_dim(module: nn.Module) -> int | None:
    """Features per head of a recognised block, or None."""
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    heads = getattr(module, "num_heads", None)
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)) or type(heads) is not int or heads < 1:
        return None
    head_dim = getattr(module, "head_dim", qkv.out_features // (3 * heads))
    if type(head_dim) is not int or head_dim < 1:
        return None
    gate, norm = getattr(module, "gate", None), getattr(module, "norm", nn.Identity())
    widths = qkv.out_features == 3 * heads * head_dim and proj.in_features == heads * head_dim
    tables_fit = all(
        getattr(module, name).dim() == 2 and getattr(module, name).shape[1] == heads
        for name in HEAD_TABLES
        if isinstance(getattr(module, name, None), nn.Parameter)
    )
    return head_dim if gate is None and isinstance(norm, nn.Identity) and widths and tables_fit else None


def _tables(module: nn.Module) -> list[str]:
    return [name for name in HEAD_TABLES if isinstance(getattr(module, name, None), nn.Parameter)]


def attention_blocks(model: nn.Module) -> list[HeadLayout]:
    """Every recognised attention block of ``model``, in ``named_modules`` order."""
    found = []
    for name, module in model.named_modules():
        head_dim = _head_dim(module)
        if head_dim is not None:
            prefix = f"{name}." if name else ""
            tables = tuple(prefix + table for table in _tables(module))
            found.append(HeadLayout(name, f"{prefix}qkv", f"{prefix}proj", module.num_heads, head_dim, tables))
    return found


def head_tables(model: nn.Module) -> list[nn.Parameter]:
    """The per-head parameters of ``model``'s recognised blocks: torch-pruning must leave them alone (it
    would slice them with feature indices); :func:`slice_head_tables` prunes them by head."""
    modules = dict(model.named_modules())
    return [getattr(modules[b.block], t.rsplit(".", 1)[-1]) for b in attention_blocks(model) for t in b.tables]


def slice_head_tables(model: nn.Module, blocks: Sequence[HeadLayout], kept: dict[str, list[int]]) -> None:
    """Keep the columns of heads ``kept[block.qkv]`` (ascending) in each of ``blocks``' per-head parameters."""
    parameters = dict(model.named_parameters())
    modules = dict(model.named_modules())
    for block in blocks:
        if block.qkv not in kept or len(kept[block.qkv]) == block.heads:
            continue
        index = torch.tensor(kept[block.qkv], dtype=torch.int64)
        for table in block.tables:
            old = parameters[table]
            new = nn.Parameter(old.data.index_select(1, index.to(old.device)), requires_grad=old.requires_grad)
            setattr(modules[block.block], table.rsplit(".", 1)[-1], new)


def sync_widths(model: nn.Module) -> None:
    """Update the widths that attention models record as plain attributes and use in reshapes, after channels
    were removed physically (:func:`~prune_search.evaluators.materialize.materialize`, replaying a plan).

    - a block with a ``qkv`` layer and ``num_heads`` gets as many heads as its per-head bias table has
      columns, or else as ``qkv`` holds ``3 · head_dim`` features for (and timm's ``attn_dim``);
    - torchvision's ``VisionTransformer`` gets ``hidden_dim`` = its patch embedding's output channels.
    """
    for module in model.modules():
        patches, hidden = getattr(module, "conv_proj", None), getattr(module, "hidden_dim", None)
        if isinstance(patches, nn.Conv2d) and type(hidden) is int:
            module.hidden_dim = patches.out_channels
        qkv, head_dim, heads = (getattr(module, key, None) for key in ("qkv", "head_dim", "num_heads"))
        if not isinstance(qkv, nn.Linear) or type(heads) is not int:
            continue
        tables = _tables(module)
        if tables:
            module.num_heads = getattr(module, tables[0]).shape[1]
        elif type(head_dim) is int and qkv.out_features % (3 * head_dim) == 0:
            module.num_heads = qkv.out_features // (3 * head_dim)
        if type(getattr(module, "attn_dim", None)) is int and type(head_dim) is int:
            module.attn_dim = module.num_heads * head_dim
