import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from prune_search.data import DataSpec, load_dataset
from prune_search.data.catalog import FASHION_MNIST_DIR
from prune_search.data.idx import read_idx
from prune_search.errors import PruneSearchError


def _indices(bundle):
    return {name: np.asarray(split.indices) for name, split in bundle.splits.items()}


def _assert_disjoint_cover(idx, total):
    train, val, test = idx["train"], idx["val"], idx["test"]
    assert not set(train) & set(val)
    assert not set(train) & set(test)
    assert not set(val) & set(test)
    assert len(train) + len(val) + len(test) == total


def test_digits_splits_are_deterministic_disjoint_and_stratified(digits):
    again = load_dataset(DataSpec("digits"))
    first, second = _indices(digits), _indices(again)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    _assert_disjoint_cover(first, 1797)
    assert digits.sizes() == {"train": 1293, "val": 144, "test": 360}
    val_labels = [digits.splits["val"][i][1] for i in range(len(digits.splits["val"]))]
    assert set(np.bincount(val_labels)) <= {14, 15}


def test_split_seed_changes_val_but_val_fraction_is_respected():
    other = load_dataset(DataSpec("digits", split_seed=1, val_fraction=0.2))
    base = load_dataset(DataSpec("digits"))
    assert not np.array_equal(_indices(other)["val"], _indices(base)["val"])
    assert abs(len(other.splits["val"]) / (1797 - 360) - 0.2) < 0.01


@pytest.mark.dataset
def test_fashion_mnist_keeps_official_test_and_holds_val_out_of_train():
    bundle = load_dataset(DataSpec("fashion-mnist"))
    idx = _indices(bundle)
    _assert_disjoint_cover(idx, 70000)
    np.testing.assert_array_equal(idx["test"], np.arange(60000, 70000))
    assert bundle.sizes() == {"train": 54000, "val": 6000, "test": 10000}
    assert (bundle.in_channels, bundle.image_size, bundle.num_classes) == (1, 28, 10)
    again = load_dataset(DataSpec("fashion-mnist"))
    np.testing.assert_array_equal(_indices(again)["val"], idx["val"])


def test_train_split_is_normalised_and_only_train_is_augmented(digits):
    x = torch.stack([digits.splits["train"][i][0] for i in range(len(digits.splits["train"]))])
    assert abs(float(x.mean())) < 1e-4
    assert abs(float(x.std()) - 1) < 1e-3
    torch.manual_seed(0)
    val_plain = next(iter(digits.loader("val", 64)))[0]
    val_aug = next(iter(digits.loader("val", 64, augment=True)))[0]
    assert torch.equal(val_plain, val_aug)
    train_plain = next(iter(digits.loader("train", 64)))[0]
    train_aug = next(iter(digits.loader("train", 64, augment=True)))[0]
    assert not torch.equal(train_plain, train_aug)


def test_shuffled_loader_order_is_a_function_of_its_seed(digits):
    def labels(seed):
        return next(iter(digits.loader("train", 32, shuffle=True, seed=seed)))[1]

    assert torch.equal(labels(3), labels(3))
    assert not torch.equal(labels(3), labels(4))


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(PruneSearchError) as info:
        load_dataset(DataSpec("fashion_mnist"))
    assert "digits, fashion-mnist, mnist, cifar10, cifar100, imagefolder:PATH" in str(info.value)


def test_missing_fashion_mnist_names_the_debian_package_and_flag(tmp_path):
    with pytest.raises(PruneSearchError) as info:
        load_dataset(DataSpec("fashion-mnist", root=str(tmp_path)))
    message = str(info.value)
    assert "apt-get install -y dataset-fashion-mnist" in message
    assert "--data-root" in message
    assert str(tmp_path) in message


def test_fashion_mnist_root_override_reads_uncompressed_copies(tmp_path):
    for path in FASHION_MNIST_DIR.glob("*.gz"):
        (tmp_path / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    bundle = load_dataset(DataSpec("fashion-mnist", root=str(tmp_path)))
    assert bundle.sizes()["test"] == 10000


def test_truncated_idx_file_is_reported(tmp_path):
    raw = gzip.decompress((FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "labels").write_bytes(raw[:-10])
    with pytest.raises(PruneSearchError, match="truncated"):
        read_idx(tmp_path / "labels")


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_an_existing_torchvision_copy_without_download(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 200), ("t10k", 50)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (count, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10)
    bundle = load_dataset(DataSpec("mnist", root=str(tmp_path)))
    assert bundle.sizes() == {"train": 180, "val": 20, "test": 50}


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_torchvision_dataset_missing_without_download_says_how_to_get_it(tmp_path, name):
    with pytest.raises(PruneSearchError) as info:
        load_dataset(DataSpec(name, root=str(tmp_path)))
    assert "--download" in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing may be downloaded without --download"


def _image_tree(root, classes=("cat", "dog"), per_class=10):
    rng = np.random.default_rng(1)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_imagefolder_single_tree_is_split_three_ways(tmp_path):
    _image_tree(tmp_path / "imgs", per_class=20)
    bundle = load_dataset(DataSpec(f"imagefolder:{tmp_path / 'imgs'}", image_size=16))
    _assert_disjoint_cover(_indices(bundle), 40)
    x, _ = bundle.splits["test"][0]
    assert x.shape == (3, 16, 16)
    assert bundle.classes == ["cat", "dog"]


def test_imagefolder_train_val_layout_uses_its_val_folder_as_test(tmp_path):
    _image_tree(tmp_path / "nette" / "train", per_class=10)
    _image_tree(tmp_path / "nette" / "val", per_class=3)
    bundle = load_dataset(DataSpec(f"imagefolder:{tmp_path / 'nette'}", image_size=16))
    assert bundle.sizes() == {"train": 18, "val": 2, "test": 6}
    x, _ = next(iter(bundle.loader("train", 4, augment=True)))
    assert x.shape == (4, 3, 16, 16)


def test_imagefolder_missing_path_is_reported(tmp_path):
    with pytest.raises(PruneSearchError, match="not a folder"):
        load_dataset(DataSpec(f"imagefolder:{tmp_path / 'nope'}"))
