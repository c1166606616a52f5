"""``cvae-bench train``: train one configuration, print a per-epoch table and the final metrics."""

from __future__ import annotations

import argparse
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
    from bench.tracking import RunHandle, TrackingWriter


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


def start_tracking(writer: "TrackingWriter", args: argparse.Namespace, model_cfg, train_cfg, data, run_name: str,
                   **tags) -> tuple["RunHandle", dict, list]:
    """Have ``writer`` create the run: its tags (:func:`bench.tracking.run_tags`), the resolved configuration
    as params (:func:`bench.tracking.config_params`) and the splits as dataset inputs. Returns (the run,
    params, dataset inputs); nothing waits for the store."""
    from bench.tracking import config_params, run_tags
    from bench.tracking.dataset_inputs import dataset_inputs

    params = config_params(model_cfg, train_cfg, data_options(args, data))
    run = writer.start_run(args.experiment, run_name, tags=run_tags(model_cfg, data, train_cfg.resolve_device(), **tags))
    run.log_params(params)
    inputs = dataset_inputs(data)
    run.log_datasets(inputs)
    return run, params, inputs


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


def check_sizes(model_cfg, train_cfg, data) -> None:
    """Sizes that can never fit the device's memory, refused in one line before a run is created: the
    model with its gradients and Adam's two moments (4 float32 copies of its parameters, counted on
    torch's meta device, where nothing is allocated) and the importance-weighted test bound."""
    import torch

    from bench.data.memory import check_fits, check_iw_fits
    from models import CVAE

    with torch.device("meta"):
        params = sum(p.numel() for p in CVAE(model_cfg).parameters())
    device = train_cfg.resolve_device()
    check_fits(16 * params, f"the model ({params:.3g} parameters: --hidden, --latent-dim, --flow-length) with its "
                            "gradients and Adam's state", device)
    check_iw_fits(train_cfg.iw_samples, data.input_shape, device)


def find_resume(args: argparse.Namespace, model_cfg, train_cfg, data):
    """The checkpoint of run ``args.resume`` to continue (local, else its MLflow artifact). None of it
    usable: a :class:`CLIError` saying why, or with ``--fresh-if-missing`` None and why on stderr.
    Returns (state or None, the RunCheckpoints of that run)."""
    from bench.tracking import resolve_tracking_uri
    from bench.tracking.checkpoints import RunCheckpoints, run_key_of
    from bench.training.checkpoint_store import run_key
    from bench.training.loop import run_fingerprint

    uri = None if args.no_track else resolve_tracking_uri(args.tracking_uri)
    old = RunCheckpoints(run_key(run_key_of(uri, args.resume)), earlier_runs=[args.resume])
    found = old.find(run_fingerprint(model_cfg, train_cfg, data), train_cfg.epochs, tracking_uri=uri,
                     dead_run_id=args.resume)
    if found.state is None:
        why = (found.message or "no checkpoint of that run").removesuffix("; starting at epoch 1")
        if not args.fresh_if_missing:
            raise CLIError(f"--resume {args.resume}: cannot resume: {why}; give --fresh-if-missing to train from "
                           "epoch 1 in a new run instead")
        print(f"--resume {args.resume}: {why}; --fresh-if-missing: starting at epoch 1", file=sys.stderr)
    else:
        print(f"--resume {args.resume}: continuing after epoch {found.epoch} ({found.source} checkpoint)")
    return found.state, old


def run_train(args: argparse.Namespace) -> int:
    """Train, print the table and final metrics; with tracking, log the run through the writer process.

    The writer (:mod:`bench.tracking.writer`) starts first, before this process imports torch, so that
    importing MLflow and opening the store overlap importing torch and loading the data. Nothing waits
    for the store until the end, and then at most :data:`bench.tracking.FLUSH_BOUND_S`: what is not
    written by then stays spooled. A store that cannot be used at all stops the command at the next
    epoch with a one-line error (exit 2); a write that fails for good lets training finish and print its
    results, then fails the same way.
    """
    from bench.tracking import TrackingWriter, check_tracking_uri, resolve_tracking_uri
    from models.config import VARIANTS, ConfigError

    if args.variant not in VARIANTS:
        raise ConfigError(f"variant={args.variant!r}: must be one of {', '.join(VARIANTS)}")
    if args.metrics_json:
        check_writable(args.metrics_json, "--metrics-json")
    if args.fresh_if_missing and not args.resume:
        raise CLIError("--fresh-if-missing: only with --resume RUN_ID")
    uri = resolve_tracking_uri(args.tracking_uri)
    if not args.no_track:
        check_tracking_uri(uri)
    writer = None if args.no_track else TrackingWriter(uri)
    resume, resumed, run = None, None, None
    try:
        from bench.data import dataset_slug
        from bench.evaluation import collapse_note
        from bench.tracking import NullTracker, TrackingError, log_fit, log_trained, ui_hint
        from bench.tracking.checkpoints import RunCheckpoints
        from bench.tracking.ui_links import run_link
        from bench.training import fit
        from bench.training.checkpoint_store import run_key
        from bench.training.config import default_cpu_threads, torch_threads

        data = load_data_from_args(args)
        model_cfg, train_cfg = configs_from_args(args, data)
        check_sizes(model_cfg, train_cfg, data)
        print(f"cvae-bench train: {model_cfg.variant} on {data.name} ({len(data.train)}/{len(data.val)}/"
              f"{len(data.test)} train/val/test, likelihood {model_cfg.likelihood}, "
              f"device {train_cfg.resolve_device()})")
        if args.resume:
            resume, resumed = find_resume(args, model_cfg, train_cfg, data)
            resumed.writer = writer  # deletes the resumed run's checkpoint artifacts once this one is done
        tags = {"resumed_from_epoch": resume["epoch"], "resumed_from_run": args.resume} if resume else {}
        if writer:
            run, params, inputs = start_tracking(writer, args, model_cfg, train_cfg, data,
                                                 f"{model_cfg.variant}-{dataset_slug(data.name)}", command="train",
                                                 **tags)
    except BaseException:
        if writer:
            writer.abandon()
        raise
    tracker = run or NullTracker()
    table = EpochTable()
    for row in resume["history"] if resume else ():  # epochs 1..k into the new run, each step once
        metrics = {k: v for k, v in row.items() if k != "epoch"}
        table(int(row["epoch"]), metrics)
        tracker.log_metrics(metrics, step=int(row["epoch"]))
    # keyed by the run's local id: known at once; the run carries it as its run key, which --resume reads
    sink = RunCheckpoints(run_key(run.local_id), run, writer=writer) if run and args.checkpoint_every else None
    logged = dict(log_model=not args.no_model, datasets=inputs, params=params,
                  tags={"variant": model_cfg.variant, "dataset": data.name, "command": "train"}) if run else {}

    def hand_over(trained) -> None:
        """Training is over: the figures and the pending model go to the writer before the test metrics are
        computed; it draws and writes them meanwhile, on the cores torch leaves it (:func:`default_cpu_threads`)."""
        log_trained(run, trained, **logged)

    try:
        with tracker:
            with torch_threads(args.threads or default_cpu_threads()):  # the caller's count restored once trained
                result = fit(model_cfg, train_cfg, data, callbacks=[table, *filter(None, [run])],
                             progress=not args.no_progress, checkpoint=sink, resume=resume,
                             checkpoint_every=args.checkpoint_every.epochs,
                             checkpoint_seconds=args.checkpoint_every.seconds, on_trained=hand_over if run else None)
            if not args.keep_checkpoints:  # a finished run needs none (a killed one keeps its own)
                for done in filter(None, [sink, resumed]):
                    done.remove()
            if run:
                log_fit(run, result, log_model=not args.no_model)
    except BaseException:
        if writer:
            _close_quietly(writer)
        raise
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
    if writer:
        note = writer.close()
        if writer.errors:
            raise TrackingError(f"MLflow run {run.run_id} is incomplete: {writer.errors[0]}")
        link = f": {run_link(uri, run.run_id, run.experiment_id)}" if run.experiment_id else ""
        print(f"tracked as MLflow run {run.run_id} in experiment {args.experiment!r}{link}")
        print(f"MLflow UI: {ui_hint(uri)}")
        if not args.no_model:
            print(f"logged model of run {run.run_id}: `cvae-bench sample --model {run.run_id} --out samples.png`, "
                  f"`cvae-bench evaluate --model {run.run_id} --dataset {args.dataset}`")
        if note:
            print(f"note: {note}", file=sys.stderr)
    if unwritten:
        raise unwritten
    return 0


def _close_quietly(writer: "TrackingWriter") -> None:
    """Close the writer after a failure (the run is ended already); the failure is the error to report."""
    try:
        note = writer.close()
    except CLIError:
        return
    if note:
        print(f"note: {note}", file=sys.stderr)


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
