"""Forwards the old, documented ``python -m bench.gpu_sweep`` to :mod:`bench.timing.gpu_sweep`."""

import sys

from bench.timing.gpu_sweep import main

if __name__ == "__main__":
    sys.exit(main())
