"""Forwards the old, documented ``python -m bench.tracking_overhead`` to :mod:`bench.timing.tracking_overhead`."""

import sys

from bench.timing.tracking_overhead import main

if __name__ == "__main__":
    sys.exit(main())
