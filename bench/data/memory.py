"""Sizes that cannot fit: refused in one line before anything is allocated (or stored).

A tensor larger than the machine's memory fails deep inside torch with a traceback (``DefaultCPUAllocator:
can't allocate memory``), after a run may already have been created; :func:`check_fits` compares a
size with the device's total memory first. The bound is the total, not what is free now: it refuses
what can never fit, not what might not fit today.
"""

from __future__ import annotations

import os

from bench.errors import CLIError

#: Most seeds a split accepts: scikit-learn's ``random_state`` (and NumPy's legacy seeding) take 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def total_memory_bytes(device: object = "cpu") -> int | None:
    """Bytes of memory of ``device`` (a torch device or its name): RAM for the CPU, the GPU's memory for CUDA;
    None where it cannot be told."""
    kind = str(getattr(device, "type", device)).split(":")[0]
    if kind == "cuda":
        import torch

        try:
            return int(torch.cuda.mem_get_info(device)[1])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if nbytes < 1000 or unit == "PB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def check_fits(nbytes: float, what: str, device: object = "cpu") -> None:
    """:class:`CLIError` ``<what> needs <size>, more than the <total> of memory <device> has`` when
    ``nbytes`` exceeds the device's total memory. ``what`` names the options that set the size."""
    total = total_memory_bytes(device)
    if total is not None and nbytes > total:
        kind = str(getattr(device, "type", device))
        raise CLIError(f"{what} needs {_size(nbytes)}, more than the {_size(total)} of memory {kind} has")


def check_seed(seed: object, option: str = "seed") -> None:
    """:class:`CLIError` unless ``seed`` is an integer in 0 .. :data:`MAX_SEED`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CLIError(f"{option}={seed!r}: must be an integer in 0..{MAX_SEED}")


def check_iw_fits(k: int, input_shape: tuple[int, ...], device: object = "cpu") -> None:
    """:class:`CLIError` if ``--iw-samples k`` can never fit: the importance-weighted bound draws k decoder
    outputs of one example at once (float32 images, twice: logits and log-probabilities)."""
    from math import prod

    check_fits(8 * k * prod(input_shape), f"--iw-samples {k} (k images of {'x'.join(map(str, input_shape))} at once)",
               device)
