"""``digits``: scikit-learn's embedded 8x8 digits (1797 images, 17 grey levels, no download)."""

from __future__ import annotations

import numpy as np
import torch

from bench.data.splits import DataSplits, assemble, three_way_split

DIGITS_LEVELS = 17  # pixel values 0..16


def load_digits(*, image_size: int | None, val_fraction: float, seed: int,
                limit: int | None) -> DataSplits:
    """The digits as :class:`DataSplits`: train/val/test = 80/10/10, x (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, val_idx, test_idx = three_way_split("digits", bunch.target, val_fraction, seed)
    class_names = tuple(str(t) for t in bunch.target_names)
    return assemble("digits", [(x, y, train_idx), (x, y, val_idx), (x, y, test_idx)],
                    class_names=class_names, levels=DIGITS_LEVELS, image_size=image_size, limit=limit)
