"""Multi-head self-attention blocks whose heads prune-search can count and prune.

A block is recognised by what timm's ``Attention`` (ViT, DeiT, MobileViT, ...) holds: an ``nn.Linear``
``qkv`` producing ``3 · num_heads · head_dim`` features laid out ``[q | k | v]``, each split into
``num_heads`` contiguous heads of ``head_dim``, and an ``nn.Linear`` ``proj`` taking the heads' concatenated
``num_heads · head_dim`` outputs. Pruning a whole head removes its ``3 · head_dim`` qkv rows and its
``head_dim`` proj columns and leaves every other head's function unchanged (same ``head_dim``, same
scale), which :func:`sync_widths` records in the block afterwards. Blocks with a gate, a norm over the
concatenated heads, or different q/k/v widths are not recognised, and their heads stay unpruned.
"""

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class HeadLayout:
    """One attention block: module names, its heads and their width (features per head)."""

    block: str
    qkv: str
    proj: str
    heads: int
    head_dim: int

    def qkv_head(self, feature: int) -> int:
        """The head a qkv output feature (0 … 3·heads·head_dim − 1) belongs to."""
        return (feature % (self.heads * self.head_dim)) // self.head_dim


def _is_block(module: nn.Module) -> bool:
    qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
    heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
        return False
    if type(heads) is not int or type(head_dim) is not int or heads < 1 or head_dim < 1:
        return False
    gate, norm = getattr(module, "gate", None), getattr(module, "norm", nn.Identity())
    widths = qkv.out_features == 3 * heads * head_dim and proj.in_features == heads * head_dim
    return gate is None and isinstance(norm, nn.Identity) and widths


def attention_blocks(model: nn.Module) -> list[HeadLayout]:
    """Every recognised attention block of ``model``, in ``named_modules`` order."""
    return [
        HeadLayout(name, f"{name}.qkv" if name else "qkv", f"{name}.proj" if name else "proj", m.num_heads, m.head_dim)
        for name, m in model.named_modules()
        if _is_block(m)
    ]


def sync_widths(model: nn.Module) -> None:
    """Update the widths that attention models record as plain attributes and use in reshapes, after channels
    were removed physically (:func:`~prune_search.evaluators.materialize.materialize`, replaying a plan).

    - a recognised-shaped block (:func:`attention_blocks`) whose ``qkv`` is narrower than
      ``3 · num_heads · head_dim`` gets the matching ``num_heads`` (and timm's ``attn_dim``);
    - torchvision's ``VisionTransformer`` gets ``hidden_dim`` = its patch embedding's output channels.
    """
    for module in model.modules():
        patches, hidden = getattr(module, "conv_proj", None), getattr(module, "hidden_dim", None)
        if isinstance(patches, nn.Conv2d) and type(hidden) is int:
            module.hidden_dim = patches.out_channels
        qkv, head_dim, heads = (getattr(module, key, None) for key in ("qkv", "head_dim", "num_heads"))
        if not isinstance(qkv, nn.Linear) or type(head_dim) is not int or type(heads) is not int:
            continue
        kept, rest = divmod(qkv.out_features, 3 * head_dim)
        if rest == 0 and kept != heads:
            module.num_heads = kept
            if type(getattr(module, "attn_dim", None)) is int:
                module.attn_dim = kept * head_dim
