"""What torch-pruning's DependencyGraph finds in a model, reduced to plain data.

A :class:`Group` is a set of coupled channels rooted at a Conv/Linear layer's output
channels; each :class:`Member` says which channels of which layer dimension it removes.
A :class:`Layer` records the geometry the analytic cost model needs. Everything here is
JSON-serialisable, so a space can be stored in a study and rebuilt on another worker.
"""

from dataclasses import asdict, dataclass
from typing import Any

CONV, LINEAR, BATCHNORM = "conv", "linear", "batchnorm"


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
    """Coupled channels: ``size`` root channels of layer ``name`` and every member they drag along."""

    name: str
    size: int
    members: list[Member]

    def multiplicity(self, member: Member) -> int:
        """How many of ``member``'s channels go with each root channel (uniform by construction)."""
        return len(member.idxs) // self.size


@dataclass(frozen=True)
class Layer:
    """Geometry of a Conv/Linear/BatchNorm layer as traced on the example input.

    ``in_channels``/``out_channels`` are the full widths (features for Linear, channels for
    BatchNorm in both); ``kernel`` is the number of weight elements per (out, in/groups)
    pair (kh·kw for convs, 1 otherwise); ``positions`` is the number of output positions per
    sample (Hout·Wout for convs, tokens for Linear); ``groups`` the conv groups.
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

    @property
    def depthwise(self) -> bool:
        return self.kind == CONV and self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class Structure:
    """Groups (searchable), layers (costed) and the parameters outside those layers."""

    groups: list[Group]
    layers: list[Layer]
    other_params: int
    input_shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Structure":
        return cls(
            groups=[Group(g["name"], g["size"], [Member(**m) for m in g["members"]]) for g in data["groups"]],
            layers=[Layer(**layer) for layer in data["layers"]],
            other_params=int(data["other_params"]),
            input_shape=list(data["input_shape"]),
        )
