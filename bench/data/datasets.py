"""Forwards the names importers of the former one-module data layer still use; import from :mod:`bench.data`.

The data layer now lives in one module per concept: :mod:`~bench.data.splits`, :mod:`~bench.data.digits`,
:mod:`~bench.data.torchvision_sets`, :mod:`~bench.data.image_folder`, :mod:`~bench.data.synthetic`,
:mod:`~bench.data.loading` and :mod:`~bench.data.errors`.
"""

from bench.data.errors import DatasetError
from bench.data.loading import DATASETS, default_data_root, load_dataset
from bench.data.splits import DataSplits, Split

__all__ = ["DATASETS", "DataSplits", "DatasetError", "Split", "default_data_root", "load_dataset"]
