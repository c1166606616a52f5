"""The data a run read, as MLflow dataset inputs: one per split, with a digest that identifies it.

Two runs on different data (another data set, seed, ``--limit`` or ``--image-size``) show different
digests in the MLflow UI's Dataset column; runs on the same split show the same one. The digest is a
BLAKE2b hash of the split's pixels quantised to ``pixel_levels`` and of its labels, so it is computed
in the training process (torch) and sent as plain data to whichever tracker writes the run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Split name -> MLflow's input context (``mlflow.data.context``), as the UI shows it.
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
DIGEST_CHARS = 16


def split_digest(split: Any, pixel_levels: int) -> str:
    """Hex digest (:data:`DIGEST_CHARS` characters) of a :class:`bench.data.Split`'s content."""
    import torch

    h = hashlib.blake2b(digest_size=DIGEST_CHARS // 2)
    levels = max(1, pixel_levels - 1)
    pixels = (split.x.detach().float() * levels).round_().clamp_(0, 255).to(torch.uint8).cpu()
    h.update(repr(tuple(split.x.shape)).encode())
    h.update(pixels.numpy().tobytes())
    h.update(split.y.detach().to(torch.int64).cpu().numpy().tobytes())
    return h.hexdigest()


def dataset_inputs(data: Any, source: str | None = None) -> list[dict[str, str]]:
    """One dataset input per split of a :class:`bench.data.DataSplits` (train, val, test), as dicts of
    name, digest, source_type, source, schema, profile and context."""
    c, h, w = data.input_shape
    schema = json.dumps({"x": f"float32 (N, {c}, {h}, {w}) in [0, 1]", "y": f"int64 (N,) in [0, {data.num_classes})"})
    inputs = []
    for split_name, context in CONTEXTS.items():
        split = getattr(data, split_name)
        profile = {"split": split_name, "num_rows": len(split), "num_classes": data.num_classes,
                   "pixel_levels": data.pixel_levels}
        inputs.append({"name": data.name, "digest": split_digest(split, data.pixel_levels), "source_type": "code",
                       "source": source or f"cvae-bench:{data.name}", "schema": schema,
                       "profile": json.dumps(profile), "context": context})
    return inputs
