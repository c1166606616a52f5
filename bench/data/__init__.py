"""Data: every data set becomes a few tensors (digits, torchvision sets, ImageFolder, synthetic).

``load_dataset(name)`` gives :class:`DataSplits` (train/val/test :class:`Split`: x (N, C, H, W) float32
in [0, 1], y (N,) int64); ``load_benchmark_data`` also knows ``synthetic:HxW``.
"""

from bench.data.errors import DatasetError
from bench.data.loading import DATASETS, default_data_root, load_dataset
from bench.data.splits import DataSplits, Split
from bench.data.synthetic import SYNTHETIC_PREFIX, load_benchmark_data, parse_synthetic, synthetic_splits

__all__ = ["DATASETS", "SYNTHETIC_PREFIX", "DataSplits", "DatasetError", "Split", "default_data_root",
           "load_benchmark_data", "load_dataset", "parse_synthetic", "synthetic_splits"]
