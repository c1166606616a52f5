"""Tests of bench.data.load_dataset: every loader reads small files written here in the genuine formats.

No network: MNIST / Fashion-MNIST get tiny gzip IDX files, CIFAR-10 tiny pickled batches, and
ImageFolder a tree of PNGs written with PIL.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data import DATASETS, DatasetError, DataSplits, Split, default_data_root, load_dataset
from bench.data import torchvision_sets


def _labels(split: Split) -> set[int]:
    return set(split.y.tolist())


def _assert_one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# --------------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def test_digits_shapes_and_values(digits):
    assert digits.name == "digits"
    assert digits.input_shape == (1, 8, 8)
    assert digits.pixel_levels == 17
    assert digits.num_classes == 10 and digits.class_names == tuple(str(i) for i in range(10))
    assert digits.default_likelihood == "bernoulli"
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and split.y.shape == (len(split),)
        assert split.x.min() >= 0 and split.x.max() <= 1
        # values are k/16 for integers k = 0..16, exactly
        k = split.x * 16
        assert torch.equal(k, k.round())
    assert digits.train.x.max() == 1 and digits.train.x.min() == 0


def test_digits_split_sizes_and_stratification(digits):
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797
    assert sizes == [1437, 180, 180]  # 80/10/10
    for split in (digits.train, digits.val, digits.test):
        assert _labels(split) == set(range(10))
    # stratified: each class has 17-19 of the 180 test examples (about 180 per class overall)
    counts = torch.bincount(digits.test.y, minlength=10)
    assert counts.min() >= 17 and counts.max() <= 19


def test_digits_splits_are_disjoint(digits):
    from sklearn.datasets import load_digits

    # every example of the original set appears exactly once across the three splits
    original = torch.from_numpy(load_digits().images).float().div(16).flatten(1)
    loaded = torch.cat([digits.train.x, digits.val.x, digits.test.x]).flatten(1)
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(loaded) == key(original)


def test_digits_seed(digits):
    same = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    assert torch.equal(same.test.x, digits.test.x) and torch.equal(same.test.y, digits.test.y)
    assert torch.equal(same.train.x, digits.train.x)
    assert not torch.equal(other.test.x, digits.test.x)
    assert not torch.equal(other.train.y, digits.train.y)


def test_limit_takes_prefix_of_each_split(digits):
    small = load_dataset("digits", limit=7)
    for full, part in zip((digits.train, digits.val, digits.test),
                          (small.train, small.val, small.test)):
        assert len(part) == 7
        assert torch.equal(part.x, full.x[:7]) and torch.equal(part.y, full.y[:7])


def test_val_fraction(digits):
    more = load_dataset("digits", val_fraction=0.2)
    assert (len(more.train), len(more.val), len(more.test)) == (1258, 359, 180)
    assert torch.equal(more.test.y, digits.test.y)  # test split does not depend on val_fraction
    none = load_dataset("digits", val_fraction=0.0)
    assert len(none.val) == 0 and none.val.x.shape == (0, 1, 8, 8)
    with pytest.raises(DatasetError):
        load_dataset("digits", val_fraction=1.0)


def test_digits_image_size_keeps_levels():
    d = load_dataset("digits", image_size=16, limit=20)
    assert d.input_shape == (1, 16, 16) and d.train.x.shape == (20, 1, 16, 16)
    assert d.pixel_levels == 17
    k = d.train.x * 16
    assert torch.equal(k, k.round())


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: tiny genuine IDX files

N_TRAIN, N_TEST = 20, 10


def _idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def _mnist_images(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Image k: 255 at (0, 0), marker value offset + k + 1 at (3, 5), label k % 10."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = 255
    images[:, 3, 5] = offset + np.arange(n) + 1
    return images, np.arange(n) % 10


def _write_mnist(root: Path, folder: str, *, gz: bool = True) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n, offset in (("train", N_TRAIN, 0), ("t10k", N_TEST, 100)):
        images, labels = _mnist_images(n, offset)
        for fname, payload in ((f"{prefix}-images-idx3-ubyte", _idx_images(images)),
                               (f"{prefix}-labels-idx1-ubyte", _idx_labels(labels))):
            if gz:
                (raw / (fname + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (raw / fname).write_bytes(payload)
    return raw


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like(tmp_path, name, folder, gz):
    raw = _write_mnist(tmp_path, folder, gz=gz)
    d = load_dataset(name, root=tmp_path, val_fraction=0.5)
    assert d.name == name
    assert d.input_shape == (1, 28, 28) and d.pixel_levels == 256
    assert d.num_classes == 10 and len(d.class_names) == 10
    assert d.default_likelihood == "bernoulli"
    assert (len(d.train), len(d.val), len(d.test)) == (10, 10, N_TEST)
    markers = {}
    for split_name, split in (("train", d.train), ("val", d.val), ("test", d.test)):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        for x, y in zip(split.x, split.y):
            v = int(round(float(x[0, 3, 5]) * 255))
            # pixel value v -> v / 255 exactly; the other marker pixel is 255 -> 1.0
            assert x[0, 3, 5] == torch.tensor(v, dtype=torch.float32) / 255
            assert x[0, 0, 0] == 1.0
            assert x.sum() == 1.0 + x[0, 3, 5]
            k = v - 1 if split_name != "test" else v - 101
            assert int(y) == k % 10
            markers.setdefault(split_name, []).append(v)
    # train and val partition the 20 official training images; test is the 10 official test images
    assert sorted(markers["train"] + markers["val"]) == list(range(1, N_TRAIN + 1))
    assert sorted(markers["test"]) == list(range(101, 101 + N_TEST))
    # stratified: val_fraction 0.5 of 2 examples per class -> one of each class in val
    assert _labels(d.val) == set(range(10))
    if gz:  # torchvision reads only uncompressed IDX files: the loader extracted them
        assert (raw / "train-images-idx3-ubyte").is_file()


def test_mnist_tiny_val_falls_back_with_warning(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    with pytest.warns(UserWarning, match="cannot stratify"):
        d = load_dataset("mnist", root=tmp_path)  # 2 val examples for 10 classes
    assert (len(d.train), len(d.val)) == (18, 2)


def test_mnist_partial_files_is_error(tmp_path):
    raw = _write_mnist(tmp_path, "MNIST")
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path)
    assert "t10k-labels-idx1-ubyte" in _assert_one_line(err)


def test_mnist_corrupt_file_is_dataset_error(tmp_path):
    raw = _write_mnist(tmp_path, "MNIST", gz=False)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x00\x00garbage")
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path)
    assert str(raw) in _assert_one_line(err)


def test_mnist_bad_gzip_is_dataset_error(tmp_path):
    raw = _write_mnist(tmp_path, "MNIST")
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", root=tmp_path)
    assert "train-images-idx3-ubyte.gz" in _assert_one_line(err)
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not list(raw.glob(".train-images*"))  # no temporary file left behind


# --------------------------------------------------------------------------------------------------
# CIFAR-10: tiny genuine pickled batches

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def _cifar_rows(n: int, first: int) -> tuple[np.ndarray, list[int]]:
    """Row k (flat R plane, G plane, B plane of 32x32): R(2,3)=marker, G(0,5)=7, B(31,31)=250."""
    rows = np.zeros((n, 3072), dtype=np.uint8)
    rows[:, 0 * 1024 + 2 * 32 + 3] = first + np.arange(n)
    rows[:, 1 * 1024 + 0 * 32 + 5] = 7
    rows[:, 2 * 1024 + 31 * 32 + 31] = 250
    return rows, [int(m) % 2 for m in first + np.arange(n)]


def _write_cifar(root: Path) -> Path:
    """The official files are Python 2 pickles whose dict keys and names are py2 ``str``;
    torchvision unpickles them with ``encoding="latin1"``, which yields Python 3 ``str`` keys
    ('data', 'labels', 'label_names'), so that is what these files hold (bytes keys would not be
    the genuine format: torchvision would find no 'data')."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        rows, labels = _cifar_rows(2, 10 + 2 * b)  # markers 10..19
        with open(folder / f"data_batch_{b + 1}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {b + 1} of 5", "labels": labels,
                         "data": rows, "filenames": ["x.png"] * 2}, f, protocol=2)
    rows, labels = _cifar_rows(3, 50)  # markers 50..52
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": labels, "data": rows,
                     "filenames": ["y.png"] * 3}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": 2, "num_vis": 3072}, f,
                    protocol=2)
    return folder


@pytest.fixture
def trust_files(monkeypatch):
    """Make the md5s of the CIFAR-10 files in ``folder`` the "official" ones (the real ones need the
    170 MB release): the loader then verifies the tests' small files as it would the real ones."""
    from torchvision.datasets.utils import calculate_md5

    def trust(folder: Path) -> Path:
        sums = {f.name: calculate_md5(f) for f in folder.iterdir()}
        monkeypatch.setattr(torchvision_sets, "cifar10_checksums", lambda: sums, raising=False)
        return folder

    return trust


class _Planted:
    """Unpickling this creates ``marker``: the code a planted batch would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar10(tmp_path, trust_files):
    trust_files(_write_cifar(tmp_path))
    d = load_dataset("cifar10", root=tmp_path, val_fraction=0.2)
    assert d.name == "cifar10"
    assert d.input_shape == (3, 32, 32) and d.pixel_levels == 256
    assert d.class_names == tuple(CIFAR_NAMES) and d.num_classes == 10
    assert d.default_likelihood == "logistic"
    assert (len(d.train), len(d.val), len(d.test)) == (8, 2, 3)
    markers = {}
    for split_name, split in (("train", d.train), ("val", d.val), ("test", d.test)):
        assert split.x.shape[1:] == (3, 32, 32) and split.x.dtype == torch.float32
        for x, y in zip(split.x, split.y):
            m = int(round(float(x[0, 2, 3]) * 255))  # red plane value lands in channel 0
            assert x[0, 2, 3] == torch.tensor(m, dtype=torch.float32) / 255
            assert x[1, 0, 5] == torch.tensor(7, dtype=torch.float32) / 255
            assert x[2, 31, 31] == torch.tensor(250, dtype=torch.float32) / 255
            assert int((x != 0).sum()) == 3
            assert int(y) == m % 2
            markers.setdefault(split_name, []).append(m)
    assert sorted(markers["train"] + markers["val"]) == list(range(10, 20))
    assert sorted(markers["test"]) == [50, 51, 52]
    assert _labels(d.val) == {0, 1}  # stratified


def test_cifar10_corrupt_batch_is_dataset_error(tmp_path, trust_files):
    folder = trust_files(_write_cifar(tmp_path))
    (folder / "data_batch_3").write_bytes(b"\x80\x04truncated")
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder / "data_batch_3") in _assert_one_line(err)


def test_cifar10_valid_but_unverified_pickle_is_dataset_error(tmp_path, trust_files):
    """A batch in the genuine format whose checksum is not the trusted one: refused by name all the same."""
    folder = trust_files(_write_cifar(tmp_path))
    rows, labels = _cifar_rows(2, 100)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "x", "labels": labels, "data": rows, "filenames": ["z.png"] * 2}, f, protocol=2)
    with pytest.raises(DatasetError, match="test_batch is not the official CIFAR-10 file") as err:
        load_dataset("cifar10", root=tmp_path)
    _assert_one_line(err)


@pytest.mark.parametrize("planted_in", ["data_batch_2", "batches.meta"])
def test_cifar10_planted_pickle_is_refused_unread(tmp_path, trust_files, planted_in):
    folder = trust_files(_write_cifar(tmp_path))
    marker = tmp_path / "code-ran"
    with open(folder / planted_in, "wb") as f:
        pickle.dump(_Planted(marker), f, protocol=2)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", root=tmp_path)
    assert f"{folder / planted_in} is not the official CIFAR-10 file" in _assert_one_line(err)
    assert not marker.exists()  # refused before it was unpickled
    pickle.loads((folder / planted_in).read_bytes())
    assert marker.exists()  # what loading it would have done


def test_cifar10_is_checked_against_torchvisions_official_checksums(tmp_path):
    """Without the tests' trusted sums, the small files are not the official release: refused, first file named."""
    from torchvision.datasets import CIFAR10

    assert torchvision_sets.cifar10_checksums()["data_batch_1"] == dict(CIFAR10.train_list)["data_batch_1"]
    assert torchvision_sets.cifar10_checksums()["batches.meta"] == CIFAR10.meta["md5"]
    folder = _write_cifar(tmp_path)
    with pytest.raises(DatasetError, match="data_batch_1 is not the official CIFAR-10 file") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(folder) in _assert_one_line(err)


# --------------------------------------------------------------------------------------------------
# ImageFolder


def _write_tree(root: Path, classes=("cat", "dog", "eel"), per_class=10, mode="L",
                sizes=((6, 5),)) -> Path:
    """Image j of class c is filled with 50*c + j (grey) or (50*c + j, 33, 200) (RGB)."""
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for j in range(per_class):
            size = sizes[j % len(sizes)]
            m = mode if isinstance(mode, str) else mode[j % len(mode)]
            fill = 50 * c + j if m == "L" else (50 * c + j, 33, 200)
            Image.new(m, size, fill).save(root / cls / f"{j:03d}.png")
    return root


def test_imagefolder_grey(tmp_path):
    root = _write_tree(tmp_path / "tree")
    d = load_dataset(f"imagefolder:{root}")
    assert d.name == f"imagefolder:{root}"
    assert d.class_names == ("cat", "dog", "eel") and d.num_classes == 3
    assert d.input_shape == (1, 5, 6)  # (C, H, W) of 6-wide, 5-high images
    assert d.default_likelihood == "bernoulli" and d.pixel_levels == 256
    assert (len(d.train), len(d.val), len(d.test)) == (24, 3, 3)
    seen = []
    for split in (d.train, d.val, d.test):
        assert _labels(split) == {0, 1, 2}  # stratified
        for x, y in zip(split.x, split.y):
            v = int(round(float(x[0, 0, 0]) * 255))
            assert torch.all(x == torch.tensor(v, dtype=torch.float32) / 255)
            assert int(y) == v // 50
            seen.append(v)
    assert sorted(seen) == [50 * c + j for c in range(3) for j in range(10)]


def test_imagefolder_rgb_with_some_grey_images(tmp_path):
    root = _write_tree(tmp_path / "tree", classes=("a", "b"), mode=("RGB", "RGB", "L"))
    d = load_dataset(f"imagefolder:{root}")
    assert d.input_shape == (3, 5, 6) and d.default_likelihood == "logistic"
    for split in (d.train, d.val, d.test):
        for x, y in zip(split.x, split.y):
            v = int(round(float(x[0, 0, 0]) * 255))
            assert int(y) == v // 50
            if x[1, 0, 0] == x[0, 0, 0]:  # a grey image, replicated to three channels
                assert torch.all(x == x[0, 0, 0])
            else:
                assert torch.all(x[1] == torch.tensor(33.0) / 255)
                assert torch.all(x[2] == torch.tensor(200.0) / 255)


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    root = _write_tree(tmp_path / "tree", sizes=((8, 8), (12, 10)))
    with pytest.raises(DatasetError) as err:
        load_dataset(f"imagefolder:{root}")
    assert "--image-size" in _assert_one_line(err)
    d = load_dataset(f"imagefolder:{root}", image_size=16)
    assert d.input_shape == (1, 16, 16) and d.train.x.shape[1:] == (1, 16, 16)
    for split in (d.train, d.val, d.test):
        for x, y in zip(split.x, split.y):  # constant images stay constant when resized
            assert torch.all(x == x[0, 0, 0])
            assert int(y) == int(round(float(x[0, 0, 0]) * 255)) // 50


def test_imagefolder_limit_and_seed(tmp_path):
    root = _write_tree(tmp_path / "tree")
    full = load_dataset(f"imagefolder:{root}", seed=3)
    small = load_dataset(f"imagefolder:{root}", seed=3, limit=2)
    assert (len(small.train), len(small.val), len(small.test)) == (2, 2, 2)
    assert torch.equal(small.train.x, full.train.x[:2])
    assert torch.equal(small.test.y, full.test.y[:2])
    other = load_dataset(f"imagefolder:{root}", seed=4)
    assert not torch.equal(other.train.x, full.train.x)


def test_imagefolder_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset(f"imagefolder:{missing}")
    assert str(missing) in _assert_one_line(err)

    one = _write_tree(tmp_path / "one", classes=("only",))
    with pytest.raises(DatasetError) as err:
        load_dataset(f"imagefolder:{one}")
    assert "2 class" in _assert_one_line(err)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset(f"imagefolder:{empty}")
    _assert_one_line(err)


# --------------------------------------------------------------------------------------------------
# Missing files and bad names


@pytest.mark.parametrize("name,folder,files", [
    ("mnist", "MNIST/raw", ["train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]",
                            "t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"]),
    ("fashion-mnist", "FashionMNIST/raw", ["train-images-idx3-ubyte[.gz]",
                                           "t10k-labels-idx1-ubyte[.gz]"]),
    ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]
     + ["test_batch", "batches.meta"]),
])
def test_missing_files(tmp_path, name, folder, files):
    with pytest.raises(DatasetError) as err:
        load_dataset(name, root=tmp_path)
    msg = _assert_one_line(err)
    assert msg.startswith(f"{name}: ")
    assert str(tmp_path / folder) in msg
    for f in files:
        assert f in msg
    assert "--download" in msg and "--data-root" in msg
    assert not (tmp_path / folder).exists()  # nothing was created or downloaded


def test_root_defaults_to_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_BENCH_DATA", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="cache"):
        load_dataset("mnist")
    _write_mnist(tmp_path / "cache", "MNIST")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(load_dataset("mnist").test) == N_TEST


@pytest.mark.parametrize("name", ["foo", "MNIST-ish", "imagenet", ""])
def test_unknown_dataset(name):
    with pytest.raises(DatasetError) as err:
        load_dataset(name)
    msg = _assert_one_line(err)
    assert msg.startswith(f"unknown dataset {name!r}")
    for known in DATASETS:
        assert known in msg
    assert "imagefolder:PATH" in msg


def test_dataset_error_is_value_error():
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"image_size": 0}, {"val_fraction": -0.1}])
def test_bad_arguments(kwargs):
    with pytest.raises(DatasetError):
        load_dataset("digits", **kwargs)


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_BENCH_DATA", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_root() == tmp_path / "mine"
    monkeypatch.delenv("CVAE_BENCH_DATA")
    assert default_data_root() == tmp_path / "xdg" / "cvae-bench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_root() == tmp_path / "home" / ".cache" / "cvae-bench" / "data"


# --------------------------------------------------------------------------------------------------
# Containers


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_split_to_keeps_values(device):
    x = torch.rand(5, 1, 4, 4)
    y = torch.arange(5)
    moved = Split(x, y).to(device)
    assert isinstance(moved, Split) and len(moved) == 5
    assert moved.x.device.type == device and moved.y.device.type == device
    assert torch.equal(moved.x.cpu(), x) and torch.equal(moved.y.cpu(), y)
    assert moved.x.dtype == torch.float32 and moved.y.dtype == torch.int64


@pytest.mark.parametrize("device", _devices())
def test_datasplits_to_keeps_values(digits, device):
    moved = digits.to(device)
    assert isinstance(moved, DataSplits) and moved is not digits
    for field in ("name", "num_classes", "class_names", "input_shape", "pixel_levels"):
        assert getattr(moved, field) == getattr(digits, field)
    for a, b in ((moved.train, digits.train), (moved.val, digits.val), (moved.test, digits.test)):
        assert a.x.device.type == device
        assert torch.equal(a.x.cpu(), b.x) and torch.equal(a.y.cpu(), b.y)
    assert moved.default_likelihood == "bernoulli"


def test_split_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64))


def test_containers_are_frozen(digits):
    with pytest.raises(AttributeError):
        digits.train.x = torch.zeros(1)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        digits.name = "other"  # type: ignore[misc]
