"""``python -m studies.cli``: the ``cvae-bench`` command."""

import sys

from studies.cli import run

sys.exit(run())
