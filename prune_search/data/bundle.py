"""A dataset split three ways, with normalisation and train-only augmentation."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from prune_search.data.spec import DataSpec

SPLITS = ("train", "val", "test")
Transform = Callable[[Tensor], Tensor]


class ArrayImages(Dataset):
    """Images held in memory as uint8 ``[N, C, H, W]`` with int64 labels ``[N]``.

    An item is ``(x, y)``: ``x`` a float32 ``[C, H, W]`` image scaled to [0, 1], passed
    through ``augment`` (if any) and normalised with per-channel ``mean``/``std``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        mean: Tensor,
        std: Tensor,
        augment: Transform | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.mean = mean.view(-1, 1, 1)
        self.std = std.view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.images[index].float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std, int(self.labels[index])


@dataclass
class DatasetBundle:
    """Train / val / test splits of one dataset and what a model needs to know about it.

    ``splits[name]`` and ``augmented_train`` are map-style datasets of ``(x [C, S, S], y)``;
    only the training split is ever augmented. ``mean``/``std`` are per channel, on the
    [0, 1] pixel scale.
    """

    spec: DataSpec
    splits: dict[str, Dataset]
    augmented_train: Dataset
    in_channels: int
    image_size: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> dict[str, int]:
        """Samples per split."""
        return {name: len(data) for name, data in self.splits.items()}

    def loader(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 0,
    ) -> DataLoader:
        """Batches ``(x [B, C, S, S] float32, y [B] int64)`` of one split.

        ``shuffle`` order is a function of ``seed``; ``augment`` applies to ``train`` only
        and draws from torch's global RNG (seed it for repeatable augmentation);
        ``drop_last`` drops a final partial batch (never when it would leave none).
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        data = self.augmented_train if (augment and split == "train") else self.splits[split]
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=drop_last and len(data) > batch_size,
            num_workers=num_workers,
        )


def subsets(data: Dataset, indices: dict[str, list[int]]) -> dict[str, Dataset]:
    """``Subset`` views of one dataset for each named index list."""
    return {name: Subset(data, idx) for name, idx in indices.items()}
