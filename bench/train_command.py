"""``cvae-bench train``: train one configuration, print a per-epoch table and the final metrics."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from models.config import BACKBONES, BETA_SCHEDULES, FLOW_KINDS, LIKELIHOODS, VARIANTS

from .cli_errors import CLIError
from .datasets import load_dataset
from .figure_data import fit_figure_data
from .fit import fit
from .posterior_collapse import collapse_note
from .presets import check_variant, model_config
from .tracking_process import TrackingProcess
from .train_config import TrainConfig


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values:
        raise argparse.ArgumentTypeError("needs at least one integer")
    return values


def add_data_arguments(p: argparse.ArgumentParser, dataset_default: str = "default") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", metavar="NAME",
                   help=f"digits (embedded, {dataset_default}), mnist, fashion-mnist, cifar10, or imagefolder:PATH "
                        "(one sub-folder of images per class)")
    g.add_argument("--data-root", default=None, metavar="DIR",
                   help="where torchvision datasets live (default: $CVAE_BENCH_DATA or ~/.cache/cvae-bench/data)")
    g.add_argument("--download", action="store_true", help="download mnist/fashion-mnist/cifar10 if absent "
                   "(off by default: nothing is fetched unless asked)")
    g.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="resize every image to PX x PX (default: native size; needed for imagefolder images of "
                        "mixed sizes)")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="keep at most N examples per split, for quick runs (default: all)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--variant", default="cvae", help=f"one of {', '.join(VARIANTS)} (default cvae)")
    g.add_argument("--backbone", default="mlp", choices=BACKBONES, help="encoder/decoder type (default mlp)")
    g.add_argument("--hidden", type=int_list, default=(128,), metavar="W[,W...]",
                   help="hidden layer widths, comma-separated (default 128: the seed preset)")
    g.add_argument("--latent-dim", type=int, default=32, metavar="L", help="latent size (default 32)")
    g.add_argument("--likelihood", default=None, choices=LIKELIHOODS,
                   help="p(x|z,c); default: bernoulli for grey images, logistic (8-bit, bits/dim) for RGB")
    g.add_argument("--binarize", action="store_true", help="dynamic binarisation of targets (bernoulli only)")
    g.add_argument("--learn-scale", action="store_true", help="gaussian likelihood with a learned per-pixel scale")
    g.add_argument("--beta", type=float, default=None,
                   help="KL weight (beta-cvae default 4; cvae must be 1); for --beta-schedule capacity see --gamma")
    g.add_argument("--beta-schedule", default="constant", choices=BETA_SCHEDULES,
                   help="constant (default), linear warm-up, cyclical annealing, or capacity (gamma*|KL-C|)")
    g.add_argument("--warmup-epochs", type=int, default=10, help="linear schedule: epochs to reach beta (default 10)")
    g.add_argument("--cycles", type=int, default=4, help="cyclical schedule: number of cycles (default 4)")
    g.add_argument("--gamma", type=float, default=100.0, help="capacity schedule: weight of |KL - C| (default 100)")
    g.add_argument("--capacity-max", type=float, default=25.0, help="capacity schedule: final C in nats (default 25)")
    g.add_argument("--flow", default=None, choices=(*FLOW_KINDS, "none"), help="flow-cvae: flow type (default planar)")
    g.add_argument("--flow-length", type=int, default=4, metavar="K", help="number of flow layers (default 4)")


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=20, help="training epochs (default 20)")
    g.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default 0)")
    g.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm, 0 = off (default)")
    g.add_argument("--seed", type=int, default=0, help="random seed; CPU runs are reproducible (default 0)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default auto: cuda if present")
    g.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted test bound (default 100)")
    g.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast (default none)")
    g.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")


def configs_from_args(args: argparse.Namespace, data):
    """(CVAEConfig, TrainConfig) from parsed arguments; raises ConfigError on bad values."""
    model_cfg = model_config(
        args.variant, data, backbone=args.backbone, hidden=args.hidden, latent_dim=args.latent_dim,
        likelihood=args.likelihood, beta=args.beta, beta_schedule=args.beta_schedule, flow=args.flow,
        flow_length=args.flow_length, binarize=args.binarize, learn_scale=args.learn_scale,
        warmup_epochs=args.warmup_epochs, cycles=args.cycles, gamma=args.gamma, capacity_max=args.capacity_max)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            weight_decay=args.weight_decay, grad_clip=args.grad_clip, seed=args.seed,
                            device=args.device, iw_samples=args.iw_samples, amp=args.amp, compile=args.compile)
    return model_cfg, train_cfg


def load_data_from_args(args: argparse.Namespace):
    return load_dataset(args.dataset, args.data_root, download=args.download, image_size=args.image_size,
                        seed=args.seed, limit=args.limit)


def add_tracking_arguments(p: argparse.ArgumentParser, default_experiment: str | None) -> None:
    g = p.add_argument_group("tracking (MLflow)")
    g.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    g.add_argument("--experiment", default=default_experiment, metavar="NAME",
                   help=f"MLflow experiment (default {default_experiment or 'the study name'})")
    g.add_argument("--no-track", action="store_true", help="log nothing to MLflow")


def data_options(args: argparse.Namespace, data) -> dict:
    """The data arguments of a run as MLflow params (the split sizes included)."""
    return {"dataset": data.name, "limit": args.limit or "none", "image_size": args.image_size or "native",
            "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test)}


def start_tracking(tracking: TrackingProcess, args: argparse.Namespace, model_cfg, train_cfg, data, run_name: str,
                   **tags) -> None:
    """Have ``tracking`` create the run: its tags (:func:`bench.tracking.run_tags`) and the resolved
    configuration as params (:func:`bench.tracking.config_params`)."""
    from .tracking import config_params, resolve_tracking_uri, run_tags

    tracking.start_run(resolve_tracking_uri(args.tracking_uri), args.experiment, run_name,
                       tags=run_tags(model_cfg, data, train_cfg.resolve_device(), **tags),
                       params=config_params(model_cfg, train_cfg, data_options(args, data)))


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


def run_train(args: argparse.Namespace) -> int:
    """Train, print the table and final metrics; with tracking, log the run from a tracking process.

    The tracking process (:mod:`bench.tracking_process`) starts first, so that importing MLflow and
    opening the store overlap loading the data and training. A store that cannot be opened stops the
    command at the next epoch with a one-line error (exit 2); a tracking failure after the run exists
    lets training finish, print and write its results, then fails the same way.
    """
    from .tracking import resolve_tracking_uri, ui_hint

    check_variant(args.variant)
    if args.metrics_json:
        check_writable(args.metrics_json, "--metrics-json")
    tracking = None if args.no_track else TrackingProcess()
    try:
        data = load_data_from_args(args)
        model_cfg, train_cfg = configs_from_args(args, data)
        print(f"cvae-bench train: {model_cfg.variant} on {data.name} ({len(data.train)}/{len(data.val)}/"
              f"{len(data.test)} train/val/test, likelihood {model_cfg.likelihood}, "
              f"device {train_cfg.resolve_device()})")
        if tracking:
            start_tracking(tracking, args, model_cfg, train_cfg, data, f"{model_cfg.variant}-{data.name}",
                           command="train")
    except BaseException:
        if tracking:
            tracking.abandon()
        raise
    with tracking or contextlib.nullcontext():
        result = fit(model_cfg, train_cfg, data, callbacks=[EpochTable(), *filter(None, [tracking])],
                     progress=not args.no_progress)
        if tracking:
            step = int(result.history[-1]["epoch"]) if result.history else 0
            tracking.log_metrics({**result.final, "train_seconds": result.train_seconds}, step=step)
            # Computed while the tracking process writes the epochs it held back during training.
            tracking.log_figures(fit_figure_data(result))
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
        print(f"tracked as MLflow run {run_id} in experiment {args.experiment!r} "
              f"({ui_hint(resolve_tracking_uri(args.tracking_uri))})")
        if tracking.note:
            print(f"note: {tracking.note}", file=sys.stderr)
    if unwritten:
        raise unwritten
    return 0


def check_writable(path: str, option: str) -> None:
    """Fail before training, not after it, when the output file ``path`` cannot be written."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    if target.is_dir():
        raise CLIError(f"{option} {path}: cannot write it (a folder of that name exists)")


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
