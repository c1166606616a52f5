"""``cvae-bench study``: an Optuna study of one variant, every trial an MLflow child run."""

from __future__ import annotations

import argparse

from bench.cli.arguments import add_data_arguments, add_device_argument, add_tracking_arguments
from studies.storage import DEFAULT_HEARTBEAT_S, DEFAULT_STORAGE

OBJECTIVE_CHOICES = ("neg-elbo", "rate-distortion")
PRUNER_CHOICES = ("median", "hyperband", "none")
SAMPLER_CHOICES = ("tpe", "nsga2", "random")


def spec_from_args(args: argparse.Namespace):
    from studies.runner import StudySpec

    return StudySpec(variant=args.variant, dataset=args.dataset, trials=args.trials, epochs=args.epochs,
                     objective=args.objective, pruner=args.pruner, sampler=args.sampler, storage=args.storage,
                     study_name=args.study_name, timeout=args.timeout, jobs=args.jobs, seed=args.seed,
                     device=args.device, iw_samples=args.iw_samples, heartbeat=args.heartbeat, threads=args.threads,
                     track=not args.no_track, tracking_uri=args.tracking_uri, experiment=args.experiment,
                     data_root=args.data_root, download=args.download, image_size=args.image_size, limit=args.limit)


def run_study_command(args: argparse.Namespace) -> int:
    from studies.runner import run_study, summary_lines

    spec = spec_from_args(args)
    print(f"cvae-bench study: {spec.name!r}: {spec.variant} on {spec.dataset}, objective {spec.objective}, "
          f"{spec.trials} finished trials wanted, {spec.epochs} epochs each, sampler {spec.sampler}, "
          f"pruner {spec.resolved_pruner}, {spec.jobs} job(s)", flush=True)
    outcome = run_study(spec, progress=not args.no_progress)
    print("\n".join(summary_lines(spec, outcome)))
    return 0


def add_study_arguments(p: argparse.ArgumentParser, *, trials_default: int = 20, epochs_default: int = 10) -> None:
    g = p.add_argument_group("study")
    g.add_argument("--variant", default="cvae", help="cvae, beta-cvae or flow-cvae (default cvae)")
    g.add_argument("--trials", type=int, default=trials_default, metavar="N",
                   help=f"finished (complete or pruned) trials wanted in total; a rerun runs only the missing ones "
                        f"(default {trials_default})")
    g.add_argument("--epochs", type=int, default=epochs_default, help=f"epochs per trial (default {epochs_default})")
    g.add_argument("--storage", default=DEFAULT_STORAGE, metavar="URL",
                   help=f"Optuna storage: an RDB URL (default {DEFAULT_STORAGE}; postgresql://user:pw@host/db) or a "
                        "journal file ending in .journal; optuna-dashboard opens either")
    g.add_argument("--study-name", default=None, metavar="NAME",
                   help="default <variant>-<dataset>-<objective>; the same name resumes the study")
    g.add_argument("--objective", default="neg-elbo", choices=OBJECTIVE_CHOICES,
                   help="neg-elbo: minimise val -ELBO with pruning; rate-distortion: minimise (val_recon, val_kl), "
                        "a Pareto front (default neg-elbo)")
    g.add_argument("--pruner", default=None, choices=PRUNER_CHOICES,
                   help="default median for neg-elbo, none for rate-distortion")
    g.add_argument("--sampler", default="tpe", choices=SAMPLER_CHOICES, help="default tpe")
    g.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="start no trial after S seconds (default: no limit)")
    g.add_argument("--jobs", type=int, default=1, metavar="J", help="trials run side by side in threads (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of the data split, the models and the sampler (default 0)")
    add_device_argument(g)
    g.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted test bound (default 100)")
    g.add_argument("--heartbeat", type=int, default=DEFAULT_HEARTBEAT_S, metavar="S",
                   help=f"RDB storages: a running trial beats every S seconds; one silent for 2*S (its process "
                        f"was killed) is failed and retried (default {DEFAULT_HEARTBEAT_S})")
    g.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch CPU threads per job (default: half the cores shared among the jobs, at least 1)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "study", help="run (or resume) an Optuna study of one variant, tracked in MLflow",
        description="Search one variant's hyperparameters with Optuna. Each trial trains one configuration and is "
                    "an MLflow child run of the study's parent run; rerunning the same command resumes the study.")
    add_study_arguments(p)
    add_data_arguments(p)
    add_tracking_arguments(p, None)
    p.set_defaults(func=run_study_command)
    return p
