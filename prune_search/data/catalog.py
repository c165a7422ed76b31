"""The datasets prune-search knows by name, each loaded into a :class:`DatasetBundle`."""

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from prune_search.data.bundle import ArrayImages, DatasetBundle, Transform
from prune_search.data.idx import read_idx
from prune_search.data.spec import DataSpec
from prune_search.data.splits import three_way
from prune_search.errors import PruneSearchError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DIGITS_TEST_FRACTION = 0.2
IMAGEFOLDER_TEST_FRACTION = 0.2
IMAGEFOLDER_SIZE = 224  # px, of an ImageFolder image when the spec names no image_size


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (``imagefolder`` takes a path: ``imagefolder:PATH``)."""
    return [*_ARRAY_LOADERS, "imagefolder:PATH"]


def default_data_root() -> Path:
    """Where torchvision datasets live: ``$PRUNE_SEARCH_DATA`` or ``~/.cache/prune-search/data``."""
    env = os.environ.get("PRUNE_SEARCH_DATA")
    return Path(env) if env else Path.home() / ".cache" / "prune-search" / "data"


def _digits(spec: DataSpec, download: bool) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64), [str(c) for c in range(10)], None


def _idx_file(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise PruneSearchError(
        f"Fashion-MNIST file {stem}(.gz) not found in {folder}; install it with "
        "'apt-get install -y dataset-fashion-mnist' or pass --data-root DIR holding the four IDX files"
    )


def _fashion_mnist(spec: DataSpec, download: bool) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    folder = Path(spec.root) if spec.root else FASHION_MNIST_DIR
    parts = [
        read_idx(_idx_file(folder, f"{prefix}-{kind}-idx{dim}-ubyte"))
        for prefix in ("train", "t10k")
        for kind, dim in (("images", 3), ("labels", 1))
    ]
    train_x, train_y, test_x, test_y = parts
    images = np.concatenate([train_x, test_x])
    labels = np.concatenate([train_y, test_y]).astype(np.int64)
    return images, labels, FASHION_MNIST_CLASSES, np.arange(len(train_y), len(labels))


def _torchvision_arrays(cls_name: str) -> Callable[[DataSpec, bool], tuple]:
    def load(spec: DataSpec, download: bool) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
        from torchvision import datasets

        cls = getattr(datasets, cls_name)
        root = Path(spec.root) if spec.root else default_data_root()
        try:
            train, test = (cls(str(root), train=flag, download=download) for flag in (True, False))
        except RuntimeError as exc:
            if download:
                raise PruneSearchError(f"downloading {spec.name} into {root} failed: {exc}") from None
            raise PruneSearchError(
                f"{spec.name} not found under {root}; pass --download to fetch it (needs network) "
                "or --data-root DIR pointing at an existing copy"
            ) from None
        except OSError as exc:
            raise PruneSearchError(f"downloading {spec.name} into {root} failed: {exc}") from None
        data = [np.asarray(part.data) for part in (train, test)]
        labels = np.concatenate([np.asarray(part.targets) for part in (train, test)]).astype(np.int64)
        return np.concatenate(data), labels, list(train.classes), np.arange(len(data[0]), len(labels))

    return load


_ARRAY_LOADERS = {
    "digits": _digits,
    "fashion-mnist": _fashion_mnist,
    "mnist": _torchvision_arrays("MNIST"),
    "cifar10": _torchvision_arrays("CIFAR10"),
    "cifar100": _torchvision_arrays("CIFAR100"),
}


def _augment(name: str) -> Transform:
    """Train-only augmentation of dataset ``name`` on [C, H, W] float images in [0, 1] (torchvision is imported
    here, when data is loaded, not when the catalog is)."""
    from torchvision.transforms import v2

    return {
        "digits": lambda: v2.RandomCrop(8, padding=1),
        "fashion-mnist": lambda: v2.Compose([v2.RandomCrop(28, padding=2), v2.RandomHorizontalFlip()]),
        "mnist": lambda: v2.RandomCrop(28, padding=2),
        "cifar10": lambda: v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]),
        "cifar100": lambda: v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]),
    }[name]()


def _array_bundle(spec: DataSpec, download: bool) -> DatasetBundle:
    images, labels, classes, test_indices = _ARRAY_LOADERS[spec.name](spec, download)
    if images.ndim == 3:
        images = images[:, None]
    elif images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    train, val, test = three_way(
        labels,
        val_fraction=spec.val_fraction,
        seed=spec.split_seed,
        test_fraction=DIGITS_TEST_FRACTION if test_indices is None else None,
        test_indices=test_indices,
    )
    pixels = torch.from_numpy(np.ascontiguousarray(images))
    targets = torch.from_numpy(labels)
    train_pixels = pixels[torch.from_numpy(train)].float().div_(255.0)
    mean = train_pixels.mean(dim=(0, 2, 3))
    std = train_pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
    plain = ArrayImages(pixels, targets, mean, std)
    augmented = ArrayImages(pixels, targets, mean, std, _augment(spec.name))
    index = {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}
    return DatasetBundle(
        spec=spec,
        splits={name: Subset(plain, idx) for name, idx in index.items()},
        augmented_train=Subset(augmented, index["train"]),
        in_channels=int(pixels.shape[1]),
        image_size=int(pixels.shape[-1]),
        classes=classes,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def _image_folder_bundle(spec: DataSpec) -> DatasetBundle:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    root = Path(spec.name.partition(":")[2]).expanduser()
    if not root.is_dir():
        raise PruneSearchError(
            f"imagefolder path {root} is not a folder; pass imagefolder:PATH with one sub-folder per class"
        )
    size = int(spec.image_size or IMAGEFOLDER_SIZE)
    finish = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_tf = v2.Compose([v2.RandomResizedCrop(size, scale=(0.35, 1.0)), v2.RandomHorizontalFlip(), *finish])
    eval_tf = v2.Compose([v2.Resize(round(size * 8 / 7)), v2.CenterCrop(size), *finish])
    held_out = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    train_root = root / "train" if (root / "train").is_dir() and held_out else root
    try:
        plain, augmented = (ImageFolder(str(train_root), transform=tf) for tf in (eval_tf, train_tf))
        test_data = ImageFolder(str(held_out), transform=eval_tf) if train_root != root else None
    except (FileNotFoundError, RuntimeError) as exc:
        raise PruneSearchError(f"cannot read image folder {root}: {exc}") from None
    labels = np.asarray(plain.targets, dtype=np.int64)
    if test_data is not None and test_data.classes != plain.classes:
        raise PruneSearchError(f"class folders of {train_root} and {held_out} differ; give both the same classes")
    train, val, test = three_way(
        labels,
        val_fraction=spec.val_fraction,
        seed=spec.split_seed,
        test_fraction=IMAGEFOLDER_TEST_FRACTION if test_data is None else None,
        test_indices=None if test_data is None else np.array([], dtype=np.int64),
        train_indices=None if test_data is None else np.arange(len(labels)),
    )
    splits = {"train": Subset(plain, train.tolist()), "val": Subset(plain, val.tolist())}
    splits["test"] = test_data if test_data is not None else Subset(plain, test.tolist())
    return DatasetBundle(
        spec=spec,
        splits=splits,
        augmented_train=Subset(augmented, train.tolist()),
        in_channels=3,
        image_size=size,
        classes=list(plain.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def load_dataset(spec: DataSpec, *, download: bool = False) -> DatasetBundle:
    """Load ``spec`` and split it. Network is used only when ``download`` is true."""
    if not 0.0 < spec.val_fraction < 1.0:
        raise PruneSearchError(f"val fraction must be between 0 and 1, got {spec.val_fraction}")
    if spec.name.startswith("imagefolder:"):
        return _image_folder_bundle(spec)
    if spec.name not in _ARRAY_LOADERS:
        raise PruneSearchError(f"unknown dataset '{spec.name}'; valid datasets are {', '.join(available_datasets())}")
    return _array_bundle(spec, download)
