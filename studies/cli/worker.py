"""``cvae-bench worker``: one of many processes, on any machines, working on one shared study.

A worker needs only the study's name and storage: what defines the study (variant, dataset,
objective, epochs, sampler, pruner, seed, ...) is read from the study's user attributes, where
the first worker or ``cvae-bench study`` put it (the defining and stored settings of
:class:`studies.spec.StudySpec`). Those options default to None, "the study's value": given, they
fill in a study that does not exist yet; for an existing study the defining ones must agree with it.
Workers pull trials until the study holds ``--trials-total`` finished trials (Optuna's
``MaxTrialsCallback`` under a storage-native lock), each trial an MLflow child run of the study's
single parent run.
"""

from __future__ import annotations

import argparse
import random
import socket
from typing import Any

from bench.errors import CLIError
from studies.cli.study import GROUP_TITLES, add_progress_argument, add_setting, value
from studies.spec import Role, StudySpec, fields_of, setting_of

#: The worker's option groups, in the order --help shows them: the study's "study" options are split
#: into the shared study, its definition (defining and stored settings) and this worker's own.
WORKER_GROUPS = {"shared study": "shared study",
                 "definition": "study definition (for a new study; for an existing one, default: its stored values)",
                 "worker": "this worker", "data": GROUP_TITLES["data"], "tracking": GROUP_TITLES["tracking"]}


def spec_from_args(args: argparse.Namespace, stored: dict[str, Any] | None) -> StudySpec:
    """StudySpec of this worker: command line over the stored study (None: none yet) over the defaults."""
    given = {f.name: value(args, f) for f in fields_of(Role.DEFINES, Role.STORED) if value(args, f) is not None}
    settings = {**(stored or {}), **given}
    if stored is None and "trials" not in settings:
        raise CLIError(f"study {args.study_name!r} does not exist yet in this storage: give --trials-total N "
                       "(and --variant, --dataset, ... unless the defaults suit) to create it")
    return StudySpec(**settings, **{f.name: value(args, f) for f in fields_of(Role.LOCAL)})


def run_worker(args: argparse.Namespace) -> int:
    from bench.tracking import redact_url
    from studies.runner import run_study, stored_settings, summary_lines

    stored = stored_settings(args.storage, args.study_name, args.heartbeat)
    spec = spec_from_args(args, stored)
    joined = "joins" if stored is not None else "creates"
    print(f"cvae-bench worker on {socket.gethostname()} {joined} study {spec.name!r} in {redact_url(spec.storage)}: "
          f"{spec.variant} on {spec.dataset}, objective {spec.objective}, until {spec.trials} trials are finished",
          flush=True)
    outcome = run_study(spec, progress=not args.no_progress, sampler_salt=random.SystemRandom().randrange(1 << 30))
    print("\n".join(summary_lines(spec, outcome)))
    return 0


def worker_group(f) -> str:
    """Which of :data:`WORKER_GROUPS` shows the option of StudySpec field ``f``."""
    s = setting_of(f)
    if s.worker_group:
        return s.worker_group
    if s.group != "study":
        return s.group
    return "worker" if s.role is Role.LOCAL else "definition"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "worker", help="join (or create) a shared study and run its trials until it has N finished trials",
        description="Run trials of one Optuna study shared by any number of workers on any machines (PostgreSQL "
                    "storage recommended), until the study holds --trials-total finished trials. What defines the "
                    "study is stored in it: a joining worker needs only --study-name and --storage. A worker killed "
                    "mid-trial is noticed by heartbeat; its trial is retried by the others.")
    for key, title in WORKER_GROUPS.items():
        group = p.add_argument_group(title)
        for f in fields_of():
            if worker_group(f) == key:
                add_setting(group, f, worker=True)
        if key == "worker":
            add_progress_argument(group)
    p.set_defaults(func=run_worker)
    return p
