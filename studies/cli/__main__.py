"""``python -m studies.cli``: the ``cvae-bench`` command."""

import sys

from studies.cli import main

sys.exit(main())
