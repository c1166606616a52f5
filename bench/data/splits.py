"""Splits held as tensors, and how every loader cuts, resizes and assembles them.

Design
------
The data sets used here are small (CIFAR-10, the largest, is 50 000 x 3 x 32 x 32 bytes), so the
whole data set is decoded once and held as tensors instead of being read sample by sample:

* :func:`bench.data.load_dataset` returns a :class:`DataSplits` whose ``train`` / ``val`` / ``test``
  members are :class:`Split` objects: ``x`` of shape ``(N, C, H, W)``, float32 in ``[0, 1]``,
  and ``y`` of shape ``(N,)``, int64 class indices.
* The caller moves everything to the training device once with :meth:`DataSplits.to` and
  batches by indexing (``x[idx]`` with a random permutation); there is no ``DataLoader``, no
  worker processes and no per-sample transform, so a training step costs only the model's work.
* Pixels stay integers (uint8) until the very end: splitting, ``limit`` and resizing
  (``image_size``) work on the integer images, and the final float conversion in :func:`assemble`
  divides by ``pixel_levels - 1``. Resizing rounds back to integers, so ``pixel_levels`` (256 for
  8-bit images, 17 for ``digits``) keeps describing the data, as the discretised likelihoods need.

Splits
------
``mnist``, ``fashion-mnist`` and ``cifar10`` keep their official test set; ``val`` is carved from
the official training set (``val_fraction`` of it, :func:`split_off`). ``digits`` and
``imagefolder:PATH`` have no official split and get train/val/test = 80/10/10 (``val_fraction`` of
the whole set for val, 10 % for test: :func:`three_way_split`). Splits are stratified by class with
scikit-learn's ``train_test_split`` (``random_state=seed``); when a class is too small to stratify,
a plain seeded shuffle is used and a warning is issued. Every split comes out shuffled, so ``limit``
(the first ``limit`` examples of each split) is a random subset.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.errors import DatasetError, one_line

TEST_FRACTION = 0.1  # digits / imagefolder: share of the whole set held out for test
RESIZE_CHUNK = 4096  # images resized per call (bounds the float intermediate)


@dataclass(frozen=True, eq=False)  # eq=False: "==" on tensors is elementwise, identity is meant
class Split:
    """One split held as tensors: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dim() != 4 or self.y.dim() != 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split needs x (N, C, H, W) and y (N,), got x {tuple(self.x.shape)} "
                             f"and y {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A data set ready for training: three splits plus what a model needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    pixel_levels: int  # number of distinct pixel values: 256 for 8-bit images, 17 for digits

    def to(self, device: torch.device | str) -> DataSplits:
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))

    @property
    def default_likelihood(self) -> str:
        """``"bernoulli"`` for grey images, ``"logistic"`` (discretised) for RGB images."""
        return "bernoulli" if self.input_shape[0] == 1 else "logistic"


def split_off(y: np.ndarray, idx: np.ndarray, n: int, seed: int,
              name: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken) with ``len(taken) == n``, stratified on ``y[idx]``.

    Both parts come back shuffled. Falls back to an unstratified seeded split (with a warning)
    where stratification is impossible (a class with one example, or fewer picks than classes).
    """
    from sklearn.model_selection import train_test_split

    if n <= 0:
        return np.random.default_rng(seed).permutation(idx), idx[:0]
    if n >= len(idx):
        raise DatasetError(f"{name}: too few examples ({len(idx)}) to split off {n}")
    try:
        rest, taken = train_test_split(idx, test_size=n, stratify=y[idx], random_state=seed,
                                       shuffle=True)
    except ValueError as err:
        warnings.warn(f"{name}: cannot stratify the split ({one_line(err)}); "
                      f"using a plain seeded shuffle", stacklevel=3)
        rest, taken = train_test_split(idx, test_size=n, random_state=seed, shuffle=True)
    return np.asarray(rest), np.asarray(taken)


def three_way_split(name: str, y: np.ndarray, val_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """80/10/10-style train/val/test indices for data sets without an official split."""
    n = len(y)
    n_test, n_val = round(TEST_FRACTION * n), round(val_fraction * n)
    if n - n_test - n_val < 1:
        raise DatasetError(f"{name}: too few examples ({n}) for a train/val/test split")
    rest, test_idx = split_off(y, np.arange(n), n_test, seed, name)
    train_idx, val_idx = split_off(y, rest, n_val, seed, name)
    return train_idx, val_idx, test_idx


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize integer images (N, C, H, W) to size x size; the result is rounded back to uint8."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], RESIZE_CHUNK):
        stop = start + RESIZE_CHUNK
        out[start:stop] = TF.resize(x[start:stop], [size, size],
                                    interpolation=InterpolationMode.BILINEAR, antialias=True)
    return out


def assemble(name: str, parts: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]], *,
             class_names: tuple[str, ...], levels: int, image_size: int | None,
             limit: int | None) -> DataSplits:
    """Build :class:`DataSplits` from integer images: parts are (x uint8, y, indices) per split."""
    if image_size is not None:  # float32 images of that size, every split, before any is made
        from bench.data.memory import check_fits

        channels = parts[0][0].shape[1]
        n = sum(len(idx) if limit is None else min(limit, len(idx)) for _, _, idx in parts)
        check_fits(n * channels * image_size**2 * 5, f"{name}: --image-size {image_size} ({n} images)")
    splits = []
    for x, y, idx in parts:
        if limit is not None:
            idx = idx[:limit]
        index = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        xs = x[index].contiguous()
        if image_size is not None:
            xs = resize_uint8(xs, image_size)
        splits.append(Split(xs.to(torch.float32).div_(levels - 1).contiguous(),
                            y[index].to(torch.int64).contiguous()))
    train, val, test = splits
    c, h, w = train.x.shape[1:]
    return DataSplits(name=name, train=train, val=val, test=test, num_classes=len(class_names),
                      class_names=tuple(class_names), input_shape=(int(c), int(h), int(w)),
                      pixel_levels=levels)


def check_labels(name: str, class_names: tuple[str, ...], *labels: torch.Tensor) -> None:
    """Raise :class:`DatasetError` when a label lies outside ``0 .. len(class_names) - 1``."""
    for y in labels:
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(class_names)):
            raise DatasetError(f"{name}: labels outside 0..{len(class_names) - 1} "
                               f"(found {int(y.min())}..{int(y.max())})")
