"""The bench commands (train, steptime, compare, regress, server, sync) and their shared arguments.

Each command module defines ``add_parser(subparsers)``; :mod:`studies.cli` gathers them into
``cvae-bench``. Modules here import nothing heavy at the top: ``--help`` needs neither torch nor MLflow.
"""
