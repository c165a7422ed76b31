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

torchvision's ``nn.MultiheadAttention`` is pruned by torch-pruning with the embedding width; here it is
costed (:func:`mha_layers`) and its one torch-pruning member spelt out (:func:`mha_members`).

torchvision's Swin and MaxViT attention take their head width from their input's width, so neither their
heads nor their input width can change: :func:`fixed_width_blocks` lists these blocks, whose projection
layers' channels stay whole.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prune_search.space.structure import ATTENTION, LINEAR, Group, Layer, Member

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


_FIXED_WIDTH = {  # (module, class) → its layers: blocks whose head width follows the input width at every call
    ("torchvision.models.swin_transformer", "ShiftedWindowAttention"): ("qkv", "proj"),
    ("torchvision.models.swin_transformer", "ShiftedWindowAttentionV2"): ("qkv", "proj"),
    ("torchvision.models.maxvit", "RelativePositionalMultiHeadAttention"): ("to_qkv", "merge"),
}


def _fixed_layers(module: nn.Module) -> tuple[str, ...]:
    return _FIXED_WIDTH.get((type(module).__module__, type(module).__name__), ())


def fixed_width_blocks(model: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """``model``'s attention blocks whose head width is computed from the input width at every call, each
    with its projection layers: torchvision's Swin ``ShiftedWindowAttention(V2)`` (``C // num_heads``) and
    MaxViT's ``RelativePositionalMultiHeadAttention`` (its output reshaped to the input width). Removing a
    head or an input channel breaks their reshapes, so these layers' channels are left whole."""
    return [
        (module, [getattr(module, name) for name in _fixed_layers(module)])
        for module in model.modules()
        if _fixed_layers(module)
    ]


def _head_dim(module: nn.Module) -> int | None:
    """Features per head of a recognised block, or None."""
    if _fixed_layers(module):
        return None  # fixed_width_blocks
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
    """The per-head parameters of ``model``'s recognised and fixed-width blocks: torch-pruning must leave them
    alone (it would slice them with feature indices); :func:`slice_head_tables` prunes them by head."""
    modules = dict(model.named_modules())
    recognised = [getattr(modules[b.block], t.rsplit(".", 1)[-1]) for b in attention_blocks(model) for t in b.tables]
    return recognised + [getattr(block, table) for block, _ in fixed_width_blocks(model) for table in _tables(block)]


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


def attention_layer(block: HeadLayout, proj: nn.Linear, output: Tensor, batch: int) -> Layer:
    """The matrix products of ``block``, costed from its projection's traced output ``[B', N, C]``: each
    sample's tokens form sequences of N tokens (B' = B for a ViT, B × patch area for MobileViT), and every
    token attends to the N tokens of its sequence."""
    tokens = output.numel() // (batch * proj.out_features)
    width = block.heads * block.head_dim
    pairs = tokens * output.shape[-2]
    return Layer(block.block, ATTENTION, width, width, 2, pairs, 1, False, False, follows=block.proj)


def mha_problem(name: str, mha: nn.MultiheadAttention, query: Tensor, key: Tensor) -> str | None:
    """Why prune-search cannot cost or prune ``mha`` (traced on ``query``/``key``), or None."""
    if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        return (
            f"MultiheadAttention '{name}' has separate key/value widths, key/value biases or a zero-attention row, "
            "which prune-search does not prune"
        )
    if query.shape != key.shape:
        return f"MultiheadAttention '{name}' attends to a sequence of another length (cross-attention)"
    return None


def mha_layers(name: str, mha: nn.MultiheadAttention, query: Tensor, batch: int) -> list[Layer]:
    """``mha`` as its in-projection (E → 3E, under the module's own name), its ``out_proj`` and the matrix
    products between them, costed from the traced ``query`` (``[B, L, E]``, or ``[L, B, E]``)."""
    width = mha.embed_dim
    tokens = query.numel() // (batch * width)
    pairs = tokens * query.shape[1 if mha.batch_first else 0]
    out = mha.out_proj
    return [
        Layer(name, LINEAR, width, 3 * width, 1, tokens, 1, mha.in_proj_bias is not None, False),
        Layer(f"{name}.out_proj", LINEAR, width, width, 1, tokens, 1, out.bias is not None, False),
        Layer(f"{name}/attention", ATTENTION, width, width, 2, pairs, 1, False, False, follows=f"{name}.out_proj"),
    ]


def mha_members(member: Member, width: int) -> list[Member]:
    """What torch-pruning's one MultiheadAttention member prunes: the q, k and v rows and the columns of the
    in-projection, and ``out_proj``'s rows and columns (:class:`tp.pruner.function.MultiheadAttentionPruner`)."""
    idxs, roots = member.idxs, member.root_idxs
    qkv = [i + part * width for part in range(3) for i in idxs]
    out_proj = f"{member.module}.out_proj"
    return [
        Member(member.module, True, qkv, roots * 3),
        Member(member.module, False, idxs, roots),
        Member(out_proj, True, idxs, roots),
        Member(out_proj, False, idxs, roots),
    ]


def head_group(group: Group, block: HeadLayout) -> Group | None:
    """``group`` (rooted at ``block``'s qkv) as one root channel per head, or None if it reaches further.

    torch-pruning couples qkv's output features with proj's input features (the v part only) and with
    nothing else; the head group keeps or removes each head's q, k and v features and proj inputs together.
    """
    if group.parameters or {(m.module, m.out) for m in group.members} != {(block.qkv, True), (block.proj, False)}:
        return None
    width, heads = block.heads * block.head_dim, list(range(block.heads))
    qkv = Member(block.qkv, True, list(range(3 * width)), [block.qkv_head(i) for i in range(3 * width)])
    proj = Member(block.proj, False, list(range(width)), [i // block.head_dim for i in range(width)])
    tables = [Member(table, True, heads, heads) for table in block.tables]
    return Group(block.qkv, block.heads, [qkv, proj], tables, heads=True)
