"""``imagefolder:PATH``: one sub-folder of images per class, decoded with PIL into one uint8 tensor.

There is no official split: train/val/test = 80/10/10 (see :func:`bench.data.splits.three_way_split`).
Grey images (PIL modes 1, L, LA) give one channel, anything else three (RGB; alpha dropped). Images
of different sizes need ``image_size``. Only the images the splits keep (after ``limit``) are decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.data.errors import DatasetError, one_line
from bench.data.splits import DataSplits, assemble, three_way_split
from bench.data.names import IMAGEFOLDER_PREFIX

PIXEL_LEVELS = 256  # 8-bit images
PROGRESS_THRESHOLD = 1000  # show a progress bar when decoding more images than this
GREY_MODES = ("1", "L", "LA")  # PIL modes loaded as one channel (alpha dropped)


def _progress(iterable, total: int, desc: str):
    if total <= PROGRESS_THRESHOLD:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img")


def load_image_folder(name: str, path: Path, *, image_size: int | None, val_fraction: float,
                      seed: int, limit: int | None) -> DataSplits:
    """The images under ``path`` as :class:`DataSplits`, x (N, C, H, W) in [0, 1], named ``name``."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if not path.is_dir():
        raise DatasetError(f"imagefolder: folder not found: {path}")
    try:
        # ImageFolder is used for the scan only (classes, samples): its default loader converts
        # every image to RGB, which would hide grey data sets, so images are decoded below.
        folder = ImageFolder(str(path))
    except (FileNotFoundError, OSError) as err:
        raise DatasetError(f"imagefolder: {one_line(err)} (expected one sub-folder of images "
                           f"per class in {path})") from None
    classes, samples = tuple(folder.classes), list(folder.samples)
    if len(classes) < 2:
        raise DatasetError(f"imagefolder: need at least 2 class sub-folders in {path}, "
                           f"found {len(classes)}")

    # Pass 1: headers only (PIL decodes lazily) -> channel count and sizes.
    modes, sizes = set(), set()
    try:
        for file, _ in _progress(samples, len(samples), "scanning images"):
            with Image.open(file) as img:
                modes.add(img.mode)
                sizes.add(img.size)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"imagefolder: cannot read image: {one_line(err)}") from None
    grey = modes <= set(GREY_MODES)
    channels, mode = (1, "L") if grey else (3, "RGB")
    if image_size is None:
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
            more = ", ..." if len(sizes) > 4 else ""
            raise DatasetError(f"imagefolder: images in {path} have different sizes "
                               f"({shown}{more}); pass --image-size to resize them to one size")
        width, height = next(iter(sizes))
    else:
        width = height = image_size

    # Split on the labels (known from the scan), then decode only the images that are kept.
    y_all = np.array([target for _, target in samples], dtype=np.int64)
    split_idx = three_way_split(name, y_all, val_fraction, seed)
    if limit is not None:
        split_idx = tuple(idx[:limit] for idx in split_idx)
    needed = np.unique(np.concatenate(split_idx))
    position = np.full(len(samples), -1, dtype=np.int64)
    position[needed] = np.arange(len(needed))

    # Pass 2: decode into one preallocated uint8 tensor.
    x = torch.empty((len(needed), channels, height, width), dtype=torch.uint8)
    try:
        for row, i in enumerate(_progress(needed, len(needed), "loading images")):
            with Image.open(samples[i][0]) as img:
                pixels = TF.pil_to_tensor(img.convert(mode))
            if tuple(pixels.shape[-2:]) != (height, width):  # only with image_size
                pixels = TF.resize(pixels, [height, width],
                                   interpolation=InterpolationMode.BILINEAR, antialias=True)
            x[row] = pixels
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"imagefolder: cannot read image: {one_line(err)}") from None
    y = torch.from_numpy(y_all[needed])
    # limit and image_size are already applied: assemble only gathers and converts
    return assemble(name, [(x, y, position[idx]) for idx in split_idx],
                    class_names=classes, levels=PIXEL_LEVELS, image_size=None, limit=None)
