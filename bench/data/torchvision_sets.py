"""``mnist``, ``fashion-mnist`` and ``cifar10``: torchvision's data sets, read from their on-disk formats.

torchvision's data set classes are used only to locate, download and parse the files; their
``.data`` / ``.targets`` attributes are converted in bulk (never through ``__getitem__``). These sets
keep their official test set; ``val`` is carved from the official training set.

Files
-----
Downloaded files live under :func:`bench.data.default_data_root` unless ``root`` says otherwise, and
are fetched only with ``download=True`` (``--download``). A missing file raises :class:`DatasetError`
with one line naming the folder and the expected files. IDX files (the MNISTs) in the genuine format
load even when they are not the official release. The CIFAR-10 batches are Python pickles, and
unpickling a file can run any code its author chose: each is read only once its md5 equals the
official release's (the checksums torchvision pins, :func:`cifar10_checksums`); a file that differs
is refused by name (:func:`verify_cifar10`) before anything is unpickled.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.data.errors import DatasetError, describe, one_line
from bench.data.splits import DataSplits, assemble, check_labels, split_off

TORCHVISION_SETS = ("mnist", "fashion-mnist", "cifar10")
PIXEL_LEVELS = 256  # 8-bit images

#: One split read from disk: uint8 images (N, C, H, W) and int64 labels (N,).
RawSplit = tuple[torch.Tensor, torch.Tensor]


def load_torchvision_set(key: str, root: Path, *, download: bool, image_size: int | None,
                         val_fraction: float, seed: int, limit: int | None) -> DataSplits:
    """``key`` (one of :data:`TORCHVISION_SETS`) from ``root``: val carved from the official train set."""
    if key in ("mnist", "fashion-mnist"):
        loaded = read_mnist(key, root, download)
    else:
        loaded = read_cifar10(root, download)
    (x_train, y_train), (x_test, y_test), class_names = loaded
    check_labels(key, class_names, y_train, y_test)
    train_idx, val_idx = split_off(y_train.numpy(), np.arange(len(y_train)),
                                   round(val_fraction * len(y_train)), seed, key)
    test_idx = np.random.default_rng(seed).permutation(len(y_test))
    return assemble(key, [(x_train, y_train, train_idx), (x_train, y_train, val_idx),
                          (x_test, y_test, test_idx)],
                    class_names=class_names, levels=PIXEL_LEVELS, image_size=image_size, limit=limit)


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX files)

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def decompress_missing(raw: Path, name: str) -> None:
    """Write ``raw/F`` from ``raw/F.gz`` for each IDX file present only gzipped.

    torchvision 0.29's MNIST checks for and reads the *uncompressed* files only (its reader opens
    the file with plain ``open``; the .gz files are extracted only as part of ``download``), so
    gzipped files a user copied in by hand would otherwise count as missing.
    """
    for fname in MNIST_FILES:
        target, packed = raw / fname, raw / (fname + ".gz")
        if target.is_file() or not packed.is_file():
            continue
        tmp = None
        try:
            with gzip.open(packed, "rb") as src, tempfile.NamedTemporaryFile(
                    dir=raw, prefix=f".{fname}.", delete=False) as dst:
                tmp = dst.name
                shutil.copyfileobj(src, dst)
            os.replace(tmp, target)
        except OSError as err:  # includes gzip.BadGzipFile and a read-only folder
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise DatasetError(f"{name}: cannot decompress {packed}: {one_line(err)}") from None


def read_mnist(name: str, root: Path, download: bool) -> tuple[RawSplit, RawSplit, tuple[str, ...]]:
    """(train, test, class names) of ``mnist`` or ``fashion-mnist``; images (N, 1, 28, 28) uint8."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    raw = root / cls.__name__ / "raw"
    processed = root / cls.__name__ / "processed"
    legacy = all((processed / f).is_file() for f in (cls.training_file, cls.test_file))
    if raw.is_dir():
        decompress_missing(raw, name)
    present = legacy or all((raw / f).is_file() for f in MNIST_FILES)
    if not present and not download:
        expected = ", ".join(f + "[.gz]" for f in MNIST_FILES)
        raise DatasetError(f"{name}: files not found in {raw} (expected {expected}); pass "
                           f"--download to fetch them or --data-root to point at them")
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except (RuntimeError, OSError) as err:  # download failure, unreadable file
        what = "could not download or read files" if not present else "could not read files"
        raise DatasetError(f"{name}: {what} in {raw}: {describe(err)}") from None
    except (AssertionError, ValueError, TypeError) as err:  # torchvision's IDX checks
        raise DatasetError(f"{name}: files in {raw} are not valid IDX files "
                           f"({describe(err)})") from None
    x_train, x_test = train.data, test.data  # uint8 (N, H, W)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{name}: train images are {tuple(x_train.shape[1:])} but test images "
                           f"are {tuple(x_test.shape[1:])} in {raw}")
    return ((x_train.unsqueeze(1), train.targets.long()),
            (x_test.unsqueeze(1), test.targets.long()), tuple(train.classes))


# --------------------------------------------------------------------------------------------------
# CIFAR-10 (pickled batches)

CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta")


def cifar10_checksums() -> dict[str, str]:
    """File name -> md5 of each file of the official CIFAR-10 python release, as torchvision pins them."""
    from torchvision.datasets import CIFAR10

    return {**dict(CIFAR10.train_list + CIFAR10.test_list), CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}


def verify_cifar10(folder: Path) -> None:
    """:class:`DatasetError` naming the first file of ``folder`` whose md5 is not the official one.

    Nothing is unpickled before this passed: a planted pickle would run its code when loaded.
    """
    from torchvision.datasets.utils import calculate_md5

    for name, expected in cifar10_checksums().items():
        path = folder / name
        try:
            actual = calculate_md5(path)
        except OSError as err:
            raise DatasetError(f"cifar10: cannot read {path}: {describe(err)}") from None
        if actual != expected:
            raise DatasetError(f"cifar10: {path} is not the official CIFAR-10 file (md5 {actual}, expected "
                               f"{expected}); CIFAR-10 batches are Python pickles, which can run code when "
                               "read, so it is not read: replace it with the official release (--download "
                               "fetches it into an empty --data-root)")


def _cifar10_class() -> type:
    from torchvision.datasets import CIFAR10

    class _VerifiedCIFAR10(CIFAR10):
        """torchvision's CIFAR10 reading files that :func:`verify_cifar10` has just checked.

        torchvision hashes every batch (``_check_integrity``) and ``batches.meta`` (inside
        ``_load_meta``) again and says only "not found or corrupted"; :func:`read_cifar10` verifies
        them first, naming the file that fails, so here both checks are "the files exist" and the
        parsing stays torchvision's own.
        """

        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, f))
                       for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            if not os.path.isfile(path):
                raise RuntimeError(f"metadata file {path} not found")
            with open(path, "rb") as infile:
                data = pickle.load(infile, encoding="latin1")
            self.classes = data[self.meta["key"]]
            self.class_to_idx = {_class: i for i, _class in enumerate(self.classes)}

    return _VerifiedCIFAR10


def read_cifar10(root: Path, download: bool) -> tuple[RawSplit, RawSplit, tuple[str, ...]]:
    """(train, test, class names) of CIFAR-10; images (N, 3, 32, 32) uint8."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    folder = root / CIFAR10.base_folder
    present = all((folder / f).is_file() for f in CIFAR_FILES)
    if not present:
        if not download:
            raise DatasetError(f"cifar10: files not found in {folder} (expected "
                               f"{', '.join(CIFAR_FILES)}); pass --download to fetch them or "
                               f"--data-root to point at them")
        try:
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename,
                                         md5=CIFAR10.tgz_md5)
        except (RuntimeError, OSError) as err:
            raise DatasetError(f"cifar10: download to {root} failed: {one_line(err)}") from None
    verify_cifar10(folder)
    cls = _cifar10_class()
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError,
            TypeError) as err:
        raise DatasetError(f"cifar10: could not read files in {folder} as CIFAR-10 python "
                           f"batches ({describe(err)})") from None

    def to_nchw(data: np.ndarray) -> torch.Tensor:  # .data is uint8 NHWC (a view of NCHW rows)
        return torch.from_numpy(data).permute(0, 3, 1, 2)

    return ((to_nchw(train.data), torch.as_tensor(train.targets, dtype=torch.int64)),
            (to_nchw(test.data), torch.as_tensor(test.targets, dtype=torch.int64)),
            tuple(str(c) for c in train.classes))
