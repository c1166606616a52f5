"""``synthetic:HxW`` / ``synthetic:CxHxW``: random images with uniform labels, for timing without files.

A train step's cost does not depend on pixel values, so step-time benchmarks can run on data of the
right shape that needs no download.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.data.loading import load_dataset
from bench.data.splits import DataSplits, Split
from models.config import ConfigError

SYNTHETIC_PREFIX = "synthetic:"


def synthetic_splits(shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, n: int = 60_000,
                     seed: int = 0) -> DataSplits:
    """Random images in [0, 1] of ``shape`` (C, H, W) with uniform labels: MNIST-shaped data without files.

    Only the train split has ``n`` examples (val/test hold 100): step timing reads train only.
    """
    gen = torch.Generator().manual_seed(seed)

    def split(size: int) -> Split:
        return Split(torch.rand(size, *shape, generator=gen), torch.randint(0, num_classes, (size,), generator=gen))

    c, h, w = shape
    return DataSplits(name=f"synthetic:{c}x{h}x{w}" if c != 1 else f"synthetic:{h}x{w}", train=split(n),
                      val=split(100), test=split(100), num_classes=num_classes,
                      class_names=tuple(str(i) for i in range(num_classes)), input_shape=(c, h, w),
                      pixel_levels=256)


def parse_synthetic(name: str) -> tuple[int, int, int]:
    """``synthetic:28x28`` -> (1, 28, 28); ``synthetic:3x32x32`` -> (3, 32, 32) as (C, H, W)."""
    spec = name[len(SYNTHETIC_PREFIX):]
    try:
        dims = tuple(int(v) for v in spec.split("x"))
    except ValueError:
        dims = ()
    if len(dims) == 2:
        dims = (1, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"dataset={name!r}: synthetic data is named synthetic:HxW or synthetic:CxHxW, "
                          f"e.g. synthetic:28x28")
    return dims  # type: ignore[return-value]


def load_benchmark_data(name: str, root: str | Path | None = None, *, seed: int = 0, synthetic_n: int = 60_000,
                        download: bool = False) -> DataSplits:
    """A data set by name (see :func:`bench.data.load_dataset`) or ``synthetic:HxW``."""
    if name.startswith(SYNTHETIC_PREFIX):
        from bench.data.memory import check_fits, check_seed

        shape = parse_synthetic(name)
        check_seed(seed)
        check_fits(4 * (synthetic_n + 200) * shape[0] * shape[1] * shape[2], f"dataset {name} ({synthetic_n} images)")
        return synthetic_splits(shape, n=synthetic_n, seed=seed)
    return load_dataset(name, root, download=download, seed=seed)
