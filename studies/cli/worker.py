"""``cvae-bench worker``: one of many processes, on any machines, working on one shared study.

A worker needs only the study's name and storage: what defines the study (variant, dataset,
objective, epochs, sampler, pruner, seed, ...) is read from the study's user attributes, where
the first worker or ``cvae-bench study`` put it (:data:`studies.runner.SPEC_ATTRS`). Options
given on the command line fill in a study that does not exist yet; for an existing study the
defining ones must agree with it. Workers pull trials until the study holds ``--trials-total``
finished trials (Optuna's ``MaxTrialsCallback`` under a storage-native lock), each trial an MLflow
child run of the study's single parent run.
"""

from __future__ import annotations

import argparse
import random
import socket
from typing import Any

from bench.cli.arguments import add_data_arguments, add_device_argument, add_tracking_arguments
from bench.errors import CLIError
from studies.cli.study import OBJECTIVE_CHOICES, PRUNER_CHOICES, SAMPLER_CHOICES
from studies.storage import DEFAULT_HEARTBEAT_S


def study_options() -> tuple[str, ...]:
    """Options that define the study (those it stores); None on the command line means "the study's value"."""
    from studies.runner import FIXED_ATTRS, SPEC_ATTRS  # imports torch: not at parser build time

    return FIXED_ATTRS + SPEC_ATTRS


def stored_settings(storage_url: str, study_name: str, heartbeat: int) -> dict[str, Any] | None:
    """The study's defining settings from its user attributes, or None if there is no such study."""
    import optuna

    from studies.storage import open_storage

    storage = open_storage(storage_url, heartbeat=heartbeat)
    try:
        attrs = optuna.load_study(study_name=study_name, storage=storage).user_attrs
    except KeyError:
        return None
    settings = {k: attrs[k] for k in study_options() if k in attrs}
    if "trials_total" in attrs:
        settings["trials"] = attrs["trials_total"]
    return settings


def spec_from_args(args: argparse.Namespace, stored: dict[str, Any] | None):
    """StudySpec of this worker: command line over the stored study over the defaults."""
    from studies.runner import StudySpec

    given = {k: getattr(args, k) for k in study_options() if getattr(args, k) is not None}
    if args.trials_total is not None:
        given["trials"] = args.trials_total
    settings = {**(stored or {}), **given}
    if stored is None and "trials" not in settings:
        raise CLIError(f"study {args.study_name!r} does not exist yet in this storage: give --trials-total N "
                       "(and --variant, --dataset, ... unless the defaults suit) to create it")
    return StudySpec(**settings, study_name=args.study_name, storage=args.storage, timeout=args.timeout,
                     jobs=args.jobs, device=args.device, heartbeat=args.heartbeat, threads=args.threads,
                     track=not args.no_track, tracking_uri=args.tracking_uri, data_root=args.data_root,
                     download=args.download)


def run_worker(args: argparse.Namespace) -> int:
    from bench.tracking.redaction import redact_url
    from studies.runner import run_study, summary_lines

    stored = stored_settings(args.storage, args.study_name, args.heartbeat)
    spec = spec_from_args(args, stored)
    joined = "joins" if stored is not None else "creates"
    print(f"cvae-bench worker on {socket.gethostname()} {joined} study {spec.name!r} in {redact_url(spec.storage)}: "
          f"{spec.variant} on {spec.dataset}, objective {spec.objective}, until {spec.trials} trials are finished",
          flush=True)
    outcome = run_study(spec, progress=not args.no_progress, sampler_salt=random.SystemRandom().randrange(1 << 30))
    print("\n".join(summary_lines(spec, outcome)))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "worker", help="join (or create) a shared study and run its trials until it has N finished trials",
        description="Run trials of one Optuna study shared by any number of workers on any machines (PostgreSQL "
                    "storage recommended), until the study holds --trials-total finished trials. What defines the "
                    "study is stored in it: a joining worker needs only --study-name and --storage. A worker killed "
                    "mid-trial is noticed by heartbeat; its trial is retried by the others.")
    g = p.add_argument_group("shared study")
    g.add_argument("--study-name", required=True, metavar="NAME", help="the study all workers share")
    g.add_argument("--storage", required=True, metavar="URL",
                   help="Optuna storage every worker reaches, e.g. postgresql://user:pw@db-host/optuna")
    g.add_argument("--trials-total", type=int, default=None, metavar="N",
                   help="finished (complete or pruned) trials wanted in the study, all workers together "
                        "(default: the study's stored total; required to create a study)")
    g = p.add_argument_group("study definition (for a new study; for an existing one, default: its stored values)")
    g.add_argument("--variant", default=None, help="cvae, beta-cvae or flow-cvae (new study default cvae)")
    g.add_argument("--epochs", type=int, default=None, help="epochs per trial (new study default 10)")
    g.add_argument("--objective", default=None, choices=OBJECTIVE_CHOICES, help="new study default neg-elbo")
    g.add_argument("--pruner", default=None, choices=PRUNER_CHOICES,
                   help="default median for neg-elbo, none for rate-distortion")
    g.add_argument("--sampler", default=None, choices=SAMPLER_CHOICES, help="new study default tpe")
    g.add_argument("--seed", type=int, default=None, help="seed of the data split and the models (new study default 0)")
    g.add_argument("--iw-samples", type=int, default=None, help="k of the importance-weighted test bound (default 100)")
    g = p.add_argument_group("this worker")
    add_device_argument(g)
    g.add_argument("--jobs", type=int, default=1, metavar="J", help="trials this worker runs side by side (default 1)")
    g.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch CPU threads per job (default: half the cores shared among the jobs, at least 1)")
    g.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT_S, metavar="S",
                   help=f"a running trial beats every S seconds; one silent for 2*S is failed and retried by another "
                        f"worker (default {DEFAULT_HEARTBEAT_S}; use the same value on every worker)")
    g.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="start no trial after S seconds (default: no limit)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_arguments(p, dataset_default="the default for a new study")
    p.set_defaults(dataset=None)  # None: the study's dataset
    add_tracking_arguments(p, None)
    p.set_defaults(func=run_worker)
    return p
