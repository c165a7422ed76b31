"""The dataset half of a run's configuration, as plain data."""

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    """Which dataset and which deterministic split of it.

    ``name``: ``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100`` or
    ``imagefolder:PATH``. ``root``: folder holding the files (``None``: the dataset's default
    place). ``val_fraction``: share of the training data held out as the validation split,
    drawn with ``split_seed`` (stratified by class). ``image_size``: px to resize
    ImageFolder images to (``None``: 224); the array datasets keep their native size.
    """

    name: str = "digits"
    root: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    image_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataSpec":
        return cls(
            name=str(data["name"]),
            root=data.get("root"),
            val_fraction=float(data.get("val_fraction", 0.1)),
            split_seed=int(data.get("split_seed", 0)),
            image_size=data.get("image_size"),
        )
