"""Data: every data set becomes a few tensors (digits, torchvision sets, ImageFolder, synthetic).

``load_dataset(name)`` gives :class:`DataSplits` (train/val/test :class:`Split`: x (N, C, H, W) float32
in [0, 1], y (N,) int64); ``load_benchmark_data`` also knows ``synthetic:HxW``. Names load on first
use: the command line reads :mod:`bench.data.names` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bench.data.names import DATASETS, IMAGEFOLDER_PREFIX, dataset_slug

if TYPE_CHECKING:
    from bench.data.errors import DatasetError
    from bench.data.loading import default_data_root, load_dataset
    from bench.data.splits import DataSplits, Split
    from bench.data.synthetic import SYNTHETIC_PREFIX, load_benchmark_data, parse_synthetic, synthetic_splits

_FACE = {
    "bench.data.errors": ("DatasetError",),
    "bench.data.loading": ("default_data_root", "load_dataset"),
    "bench.data.splits": ("DataSplits", "Split"),
    "bench.data.synthetic": ("SYNTHETIC_PREFIX", "load_benchmark_data", "parse_synthetic", "synthetic_splits"),
}
_WHERE = {name: module for module, names in _FACE.items() for name in names}

__all__ = ["DATASETS", "IMAGEFOLDER_PREFIX", "dataset_slug", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'bench.data' has no attribute {name!r}")
