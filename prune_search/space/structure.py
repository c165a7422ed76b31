"""What torch-pruning's DependencyGraph finds in a model, reduced to plain data.

A :class:`Group` is a set of coupled channels rooted at a Conv/Linear layer's output
channels; each :class:`Member` says which channels of which layer dimension it removes.
A :class:`Layer` records the geometry the analytic cost model needs. Everything here is
JSON-serialisable, so a space can be stored in a study and rebuilt on another worker.
"""

from dataclasses import asdict, dataclass, field
from typing import Any

CONV, LINEAR, BATCHNORM = "conv", "linear", "batchnorm"
NORM = "norm"  # LayerNorm, GroupNorm: per-channel affine parameters, no MACs
PARAMETER = "parameter"  # an nn.Parameter outside any layer torch-pruning knows (e.g. ConvNeXt's layer_scale)
ATTENTION = "attention"  # the two matrix products of multi-head attention (q·kᵀ, weights·v); no parameters


@dataclass(frozen=True)
class Member:
    """One layer dimension a group prunes.

    ``module``: qualified name; ``out``: True for output channels (or a norm layer's
    channels), False for input channels; ``idxs[i]`` is the layer's channel removed together
    with root channel ``root_idxs[i]``.
    """

    module: str
    out: bool
    idxs: list[int]
    root_idxs: list[int]


@dataclass(frozen=True)
class Group:
    """Coupled channels: ``size`` root channels of layer ``name`` and every member they drag along.

    ``parameters`` are the unwrapped ``nn.Parameter`` dimensions the group prunes (``Member.module``
    is the parameter's qualified name, ``out`` True). ``blocks`` splits the root channels into that
    many contiguous blocks of ``size // blocks`` (the channel groups of a grouped convolution or a
    GroupNorm): a candidate keeps the same number of channels in every block, and with ``aligned``
    the same positions in every block (a grouped convolution's input channels), so a keep count is
    a multiple of ``blocks``. Members that take only part of the root channels (the branches of an
    uneven concatenation or split, :meth:`partial`) each cover whole blocks. With ``heads`` each
    root channel is one attention head (all of its q, k, v and projection features, see
    :mod:`prune_search.space.attention`): keep counts are head counts, which the space's channel
    rounding and floor leave alone.
    """

    name: str
    size: int
    members: list[Member]
    parameters: list[Member] = field(default_factory=list)
    blocks: int = 1
    aligned: bool = False
    heads: bool = False

    def root(self) -> Member:
        """The member for the root layer's own output channels."""
        return next(m for m in self.members if m.module == self.name and m.out)

    def multiplicity(self, member: Member) -> int:
        """How many of ``member``'s channels go with each root channel it covers (uniform by construction)."""
        return len(member.idxs) // len(set(member.root_idxs))

    def partial(self, member: Member) -> bool:
        """Whether ``member`` takes only some of the root channels (one side of a concatenation or split).

        It then covers whole ``blocks`` (the trace makes them fine enough), so it keeps
        ``len(member.idxs) · keep / size`` channels for every valid keep count.
        """
        return len(set(member.root_idxs)) < self.size


@dataclass(frozen=True)
class Layer:
    """Geometry of a Conv/Linear/norm layer or unwrapped parameter as traced on the example input.

    ``in_channels``/``out_channels`` are the full widths (features for Linear, channels for
    norms and parameters in both); ``kernel`` is the number of weight elements per (out, in/groups)
    pair (kh·kw for convs, 1 for Linear and BatchNorm) and, for LayerNorm/GroupNorm (``NORM``) and
    unwrapped parameters (``PARAMETER``), the number of parameters per channel; ``positions`` is the
    number of output positions per sample (Hout·Wout for convs, tokens for Linear, 1 otherwise);
    ``groups`` the conv groups (a GroupNorm's ``num_groups``).

    An ``ATTENTION`` layer is one attention block's matrix products: its width is the input width of
    its output projection ``follows`` (heads · head_dim), ``positions`` the (query, key) token pairs and
    ``kernel`` 2 (q·kᵀ and weights·v each take tokens² · head_dim MACs per head).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: int
    positions: int
    groups: int
    bias: bool
    affine: bool
    follows: str = ""

    @property
    def depthwise(self) -> bool:
        return self.kind == CONV and self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class Structure:
    """Groups (searchable), layers (costed), the parameters outside those layers and the MACs torch
    counts for the unpruned model on one input sample (:func:`~prune_search.space.flops.counted_macs`;
    None in spaces stored before it was measured)."""

    groups: list[Group]
    layers: list[Layer]
    other_params: int
    input_shape: list[int]
    counted_macs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def pruned_norms(self) -> list[str]:
        """LayerNorm/GroupNorm layers a group prunes: masking their input channels changes their statistics."""
        norms = {layer.name for layer in self.layers if layer.kind == NORM}
        return sorted({m.module for g in self.groups for m in g.members if m.module in norms})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Structure":
        return cls(
            groups=[
                Group(
                    g["name"],
                    g["size"],
                    [Member(**m) for m in g["members"]],
                    [Member(**m) for m in g.get("parameters", [])],
                    int(g.get("blocks", 1)),
                    bool(g.get("aligned", False)),
                    bool(g.get("heads", False)),
                )
                for g in data["groups"]
            ],
            layers=[Layer(**layer) for layer in data["layers"]],
            other_params=int(data["other_params"]),
            input_shape=list(data["input_shape"]),
            counted_macs=None if data.get("counted_macs") is None else int(data["counted_macs"]),
        )
