"""Data-set names as users type them, and the name-friendly form runs and studies are named with."""

from __future__ import annotations

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")  # plus "imagefolder:PATH"
IMAGEFOLDER_PREFIX = "imagefolder:"


def dataset_slug(dataset: str) -> str:
    """A name-friendly form of a dataset argument (``imagefolder:/data/flowers`` -> ``imagefolder-flowers``)."""
    if dataset.startswith(IMAGEFOLDER_PREFIX):
        return "imagefolder-" + dataset.rstrip("/").rsplit("/", 1)[-1]
    return dataset
