"""``cvae-bench train``: train one configuration, print a per-epoch table and the final metrics."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.arguments import (
    add_data_arguments,
    add_model_arguments,
    add_tracking_arguments,
    add_training_arguments,
    check_writable,
)
from bench.errors import CLIError

if TYPE_CHECKING:  # torch and the harness load when a command runs, not for --help
    from bench.tracking import TrackingProcess


def configs_from_args(args: argparse.Namespace, data):
    """(CVAEConfig, TrainConfig) from parsed arguments; raises ConfigError on bad values."""
    from bench.training import TrainConfig, model_config

    model_cfg = model_config(
        args.variant, data, backbone=args.backbone, hidden=args.hidden, latent_dim=args.latent_dim,
        likelihood=args.likelihood, beta=args.beta, beta_schedule=args.beta_schedule, flow=args.flow,
        flow_length=args.flow_length, binarize=args.binarize, learn_scale=args.learn_scale,
        warmup_epochs=args.warmup_epochs, cycles=args.cycles, gamma=args.gamma, capacity_max=args.capacity_max)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed,
                            device=args.device, iw_samples=args.iw_samples, eval_batch_size=args.eval_batch_size,
                            amp=args.amp, compile=args.compile, cuda_graphs=args.cuda_graphs)
    return model_cfg, train_cfg


def load_data_from_args(args: argparse.Namespace):
    from bench.data import load_dataset

    return load_dataset(args.dataset, args.data_root, download=args.download, image_size=args.image_size,
                        seed=args.seed, limit=args.limit)


def data_options(args: argparse.Namespace, data) -> dict:
    """The data arguments of a run as MLflow params (the split sizes included)."""
    return {"dataset": data.name, "limit": args.limit or "none", "image_size": args.image_size or "native",
            "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test)}


def start_tracking(tracking: "TrackingProcess", args: argparse.Namespace, model_cfg, train_cfg, data, run_name: str,
                   **tags) -> tuple[dict, list]:
    """Have ``tracking`` create the run: its tags (:func:`bench.tracking.run_tags`), the resolved
    configuration as params (:func:`bench.tracking.config_params`) and the splits as dataset inputs.
    Returns (params, dataset inputs)."""
    from bench.tracking import config_params, resolve_tracking_uri, run_tags
    from bench.tracking.dataset_inputs import dataset_inputs

    params = config_params(model_cfg, train_cfg, data_options(args, data))
    tracking.start_run(resolve_tracking_uri(args.tracking_uri), args.experiment, run_name,
                       tags=run_tags(model_cfg, data, train_cfg.resolve_device(), **tags), params=params)
    inputs = dataset_inputs(data)
    tracking.log_datasets(inputs)
    return params, inputs


def format_row(values: list, widths: list[int]) -> str:
    return "  ".join(f"{v:>{w}.3f}" if isinstance(v, float) else f"{v!s:>{w}}" for v, w in zip(values, widths))


class EpochTable:
    """Prints one row per epoch: the recon/KL trade-off side by side."""

    COLUMNS = ("epoch", "train_recon", "train_kl", "val_recon", "val_kl", "val_neg_elbo", "beta", "step_ms",
               "samples_per_s")

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.widths = [max(len(c), 9) for c in self.COLUMNS]
        print(format_row(list(self.COLUMNS), self.widths), file=self.stream, flush=True)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        from tqdm.auto import tqdm
        row = format_row([epoch, *(float(metrics[c]) for c in self.COLUMNS[1:])], self.widths)
        tqdm.write(row, file=self.stream)


class RunCheckpointSink:
    """``fit``'s checkpoint sink for a train run: :class:`bench.tracking.checkpoints.RunCheckpoints` keyed
    by the run's id (``run/<run id>``), once the tracking process has reported it."""

    WAIT_S = 10.0  # longest wait for the run id at the first checkpoint (s); the run exists long before

    def __init__(self, tracking: "TrackingProcess") -> None:
        self.tracking = tracking
        self.checkpoints = None

    def __call__(self, epoch: int, state: dict) -> None:
        import time

        from bench.tracking.checkpoints import RunCheckpoints
        from bench.training.checkpoint_store import run_key

        if self.checkpoints is None:
            deadline = time.monotonic() + self.WAIT_S
            while self.tracking.run_id is None and time.monotonic() < deadline and self.tracking.error is None:
                time.sleep(0.01)
            if self.tracking.run_id is None:
                return  # no run (yet): nothing to key it by; the next checkpoint tries again
            self.checkpoints = RunCheckpoints(run_key(self.tracking.run_id), self.tracking)
        self.checkpoints(epoch, state)

    def remove(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.remove()


def spare_a_core(model) -> None:
    """On the CPU, one torch thread fewer (if it has more than one): the test metrics of a tracked run
    are computed while the tracking process draws the figures and writes the model. With every core
    busy (torch's OpenMP threads spin between kernels) that niced process would wait for the training
    process to finish, and all its work would add to the run's wall time. The default MLP on digits
    computes its test metrics as fast on one thread as on two (0.35 s, 2-core VM). The caller restores
    the thread count."""
    import torch

    threads = torch.get_num_threads()
    if threads > 1 and next(model.parameters()).device.type == "cpu":
        torch.set_num_threads(threads - 1)


def find_resume(args: argparse.Namespace, model_cfg, train_cfg, data):
    """The checkpoint of run ``args.resume`` to continue (local, else its MLflow artifact), or None;
    why not, in one line on stderr. Returns (state or None, the local RunCheckpoints of that run)."""
    from bench.tracking.checkpoints import RunCheckpoints
    from bench.training.checkpoint_store import run_key
    from bench.training.loop import run_fingerprint

    client = None
    if not args.no_track:
        from bench.tracking import make_client, resolve_tracking_uri

        client = make_client(resolve_tracking_uri(args.tracking_uri))
    old = RunCheckpoints(run_key(args.resume), client=client, earlier_runs=[args.resume])
    found = old.find(run_fingerprint(model_cfg, train_cfg, data), train_cfg.epochs, client=client,
                     dead_run_id=args.resume)
    if found.state is None:
        print(f"--resume {args.resume}: {found.message or 'no checkpoint of that run; starting at epoch 1'}",
              file=sys.stderr)
    else:
        print(f"--resume {args.resume}: continuing after epoch {found.epoch} ({found.source} checkpoint)")
    return found.state, old


def run_train(args: argparse.Namespace) -> int:
    """Train, print the table and final metrics; with tracking, log the run from a tracking process.

    The tracking process (:mod:`bench.tracking.process`) starts first, before this process imports
    torch, so that importing MLflow, opening the store and the tracking process's warm-ups overlap
    importing torch and loading the data, not training. A store that cannot be opened stops the
    command at the next epoch with a one-line error (exit 2); a tracking failure after the run exists
    lets training finish, print and write its results, then fails the same way.
    """
    from bench.tracking import TrackingProcess
    from models.config import VARIANTS, ConfigError

    if args.variant not in VARIANTS:
        raise ConfigError(f"variant={args.variant!r}: must be one of {', '.join(VARIANTS)}")
    if args.metrics_json:
        check_writable(args.metrics_json, "--metrics-json")
    if args.checkpoint_every < 0:
        raise CLIError(f"--checkpoint-every {args.checkpoint_every}: must be an integer >= 0 (epochs; 0: never)")
    tracking = None if args.no_track else TrackingProcess()
    resume, resumed = None, None
    try:
        from bench.data import dataset_slug
        from bench.evaluation import collapse_note
        from bench.tracking import log_fit, log_trained, resolve_tracking_uri, ui_hint
        from bench.tracking.ui_links import run_link
        import torch

        from bench.training import fit

        data = load_data_from_args(args)
        model_cfg, train_cfg = configs_from_args(args, data)
        print(f"cvae-bench train: {model_cfg.variant} on {data.name} ({len(data.train)}/{len(data.val)}/"
              f"{len(data.test)} train/val/test, likelihood {model_cfg.likelihood}, "
              f"device {train_cfg.resolve_device()})")
        if args.resume:
            resume, resumed = find_resume(args, model_cfg, train_cfg, data)
        tags = {"resumed_from_epoch": resume["epoch"], "resumed_from_run": args.resume} if resume else {}
        if tracking:
            params, inputs = start_tracking(tracking, args, model_cfg, train_cfg, data,
                                            f"{model_cfg.variant}-{dataset_slug(data.name)}", command="train", **tags)
    except BaseException:
        if tracking:
            tracking.abandon()
        raise
    table = EpochTable()
    for row in resume["history"] if resume else ():  # epochs 1..k into the new run, each step once
        metrics = {k: v for k, v in row.items() if k != "epoch"}
        table(int(row["epoch"]), metrics)
        if tracking:
            tracking.log_metrics(metrics, step=int(row["epoch"]))
    sink = RunCheckpointSink(tracking) if tracking and args.checkpoint_every else None
    logged = dict(log_model=not args.no_model, datasets=inputs, params=params,
                  tags={"variant": model_cfg.variant, "dataset": data.name, "command": "train"}) if tracking else {}

    def hand_over(trained) -> None:
        """Training is over (the tracking process wakes and writes what it held), and the figures and
        the pending model go to the tracking process before the test metrics are computed: it draws
        and writes them meanwhile, on the core :func:`spare_a_core` leaves it."""
        tracking.release()
        log_trained(tracking, trained, **logged)
        spare_a_core(trained.model)

    with tracking or contextlib.nullcontext():
        if tracking:
            tracking.hold()
        threads = torch.get_num_threads()
        try:
            result = fit(model_cfg, train_cfg, data, callbacks=[table, *filter(None, [tracking])],
                         progress=not args.no_progress, checkpoint=sink, checkpoint_every=args.checkpoint_every,
                         resume=resume, on_trained=hand_over if tracking else None)
        finally:
            torch.set_num_threads(threads)  # what spare_a_core took
        if not args.keep_checkpoints:  # a finished run needs none (a killed one keeps its own)
            for done in filter(None, [sink, resumed]):
                done.remove()
        if tracking:
            log_fit(tracking, result, trained=True, **logged)
    print("final metrics (nats per example unless named):")
    for key, value in result.final.items():
        print(f"  {key:<22} {value:.4f}")
    collapsed = collapse_note(result.final)
    if collapsed:
        print(f"note: {collapsed}")
    unwritten = None
    if args.metrics_json:
        try:
            Path(args.metrics_json).write_text(json.dumps(result.final, indent=2) + "\n")
        except OSError as exc:  # the run is still tracked to the end before this is reported
            unwritten = CLIError(f"--metrics-json {args.metrics_json}: cannot write it ({exc.strerror or exc})")
    if tracking:
        run_id = tracking.finish()
        uri = resolve_tracking_uri(args.tracking_uri)
        link = f": {run_link(uri, run_id, tracking.experiment_id)}" if tracking.experiment_id else ""
        print(f"tracked as MLflow run {run_id} in experiment {args.experiment!r}{link}")
        print(f"MLflow UI: {ui_hint(uri)}")
        if not args.no_model:
            print(f"logged model of run {run_id}: `cvae-bench sample --model {run_id} --out samples.png`, "
                  f"`cvae-bench evaluate --model {run_id} --dataset {args.dataset}`")
        if tracking.note:
            print(f"note: {tracking.note}", file=sys.stderr)
    if unwritten:
        raise unwritten
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train one configuration and report its metrics",
                              description="Train one CVAE configuration; print a per-epoch table of the "
                                          "reconstruction and KL terms (train and validation) and the final "
                                          "test metrics, in nats per example.")
    add_data_arguments(p)
    add_model_arguments(p)
    add_training_arguments(p)
    add_tracking_arguments(p, "cvae-bench-train")
    g = p.add_argument_group("output")
    g.add_argument("--metrics-json", default=None, metavar="PATH",
                   help="also write the final metrics as a flat JSON object (default: none written)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)
    return p
