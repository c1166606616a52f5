"""``load_dataset``: any data set by name, into memory as :class:`bench.data.splits.DataSplits`.

Names: ``digits`` (:mod:`bench.data.digits`), ``mnist``, ``fashion-mnist``, ``cifar10``
(:mod:`bench.data.torchvision_sets`) and ``imagefolder:PATH`` (:mod:`bench.data.image_folder`).
The splits and the tensor layout are described in :mod:`bench.data.splits`.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data.digits import load_digits
from bench.data.errors import DatasetError
from bench.data.image_folder import load_image_folder
from bench.data.memory import check_seed
from bench.data.names import DATASETS, IMAGEFOLDER_PREFIX
from bench.data.splits import DataSplits
from bench.data.torchvision_sets import load_torchvision_set



def default_data_root() -> Path:
    """Per-user cache folder for downloaded data sets.

    ``$CVAE_BENCH_DATA`` if set, else ``$XDG_CACHE_HOME/cvae-bench/data``, else
    ``~/.cache/cvae-bench/data``. The folder is not created here.
    """
    explicit = os.environ.get("CVAE_BENCH_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):  # the XDG spec ignores relative paths
        return Path(xdg).expanduser() / "cvae-bench" / "data"
    return Path.home() / ".cache" / "cvae-bench" / "data"


def load_dataset(name: str, root: str | Path | None = None, *, download: bool = False,
                 image_size: int | None = None, val_fraction: float = 0.1, seed: int = 0,
                 limit: int | None = None) -> DataSplits:
    """Load a data set into memory as :class:`DataSplits`.

    Args:
        name: one of :data:`DATASETS` or ``"imagefolder:PATH"`` (one sub-folder per class).
        root: folder holding the downloaded files (default :func:`default_data_root`); unused by
            ``digits`` (ships with scikit-learn) and ``imagefolder``.
        download: fetch missing files (torchvision data sets only).
        image_size: resize every image to ``image_size`` x ``image_size``.
        val_fraction: share used for validation (of the official training set for mnist,
            fashion-mnist and cifar10; of the whole set for digits and imagefolder).
        seed: seed of the train/val/test split and of the shuffling of every split.
        limit: keep only the first ``limit`` examples of each (shuffled) split.

    Raises:
        DatasetError: unknown name, missing or unreadable files, bad arguments.
    """
    if not isinstance(name, str):
        raise DatasetError(f"dataset name must be a string, got {name!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DatasetError(f"image_size={image_size!r}: must be an integer >= 1")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"limit={limit!r}: must be an integer >= 1")
    if not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"val_fraction={val_fraction!r}: must be in [0, 1)")
    check_seed(seed)

    if name.startswith(IMAGEFOLDER_PREFIX):
        path = name[len(IMAGEFOLDER_PREFIX):]
        if not path:
            raise DatasetError("imagefolder: give a folder, e.g. imagefolder:/data/flowers")
        return load_image_folder(name, Path(path).expanduser(), image_size=image_size,
                                 val_fraction=val_fraction, seed=seed, limit=limit)

    key = name.strip().lower()
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose digits, mnist, fashion-mnist, "
                           f"cifar10 or imagefolder:PATH")
    if key == "digits":
        return load_digits(image_size=image_size, val_fraction=val_fraction, seed=seed,
                           limit=limit)
    data_root = Path(root).expanduser() if root else default_data_root()
    return load_torchvision_set(key, data_root, download=download, image_size=image_size,
                                val_fraction=val_fraction, seed=seed, limit=limit)
