"""Data: every data set becomes a few tensors (digits, torchvision sets, ImageFolder, synthetic)."""

from bench.data.datasets import DATASETS, DatasetError, DataSplits, Split, default_data_root, load_dataset

__all__ = ["DATASETS", "DatasetError", "DataSplits", "Split", "default_data_root", "load_dataset"]
