"""Argument groups and option types shared by the commands (bench's and the studies'), and the parser class.

Nothing here imports torch or MLflow: building every parser for ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from bench.data.memory import MAX_SEED
from bench.errors import CLIError
from models.config import BACKBONES, BETA_SCHEDULES, FLOW_KINDS, LIKELIHOODS, VARIANTS

#: How often ``train`` saves its training state (``--checkpoint-every``): at the end of the first epoch
#: that ends a minute or more after the last save. A killed run loses at most about a minute and an
#: epoch; a run of short epochs (digits: ~40 ms each) does not pay for a save every few epochs: every
#: 5 epochs, a 300-epoch digits run paid +15.8 % for tracking against +2.8 % with none (medians,
#: docs/tracking.md). Study trials count epochs (``studies.spec``).
DEFAULT_TRAIN_CHECKPOINT_EVERY = "60s"
#: Seconds per unit of a ``--checkpoint-every`` time.
TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class CheckpointEvery:
    """When a run saves its training state: every ``epochs`` epochs, or at the end of the first epoch
    that ends ``seconds`` (s, wall clock) or more after the last save (or the start); neither: never."""

    epochs: int = 0
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.epochs or self.seconds)


def checkpoint_every(text: str) -> CheckpointEvery:
    """``5``: every 5 epochs; ``30s``, ``10m``, ``1h``: by the time since the last save; ``0``: never."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in TIME_UNITS else (text, "")
    try:
        value = float(number) if unit else int(number)
    except ValueError:
        value = -1
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of epochs (5) nor a time (30s, 10m, 1h)")
    return CheckpointEvery(seconds=value * TIME_UNITS[unit]) if unit else CheckpointEvery(epochs=value)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but errors are a single line (plus a pointer to --help) and exit 2."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def int_list(text: str) -> tuple[int, ...]:
    """``64,128`` -> (64, 128); an empty item (``64,,256``, ``64,``) is an error, not skipped."""
    items = [v.strip() for v in text.replace("x", ",").split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("needs at least one integer")
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item: give integers separated by single commas")
    try:
        return tuple(int(v) for v in items)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def name_list(text: str) -> tuple[str, ...]:
    """``cvae,beta-cvae`` -> ('cvae', 'beta-cvae'); an empty item (``cvae,``, ``a,,b``) is an error."""
    items = [v.strip() for v in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError("needs at least one name")
    if not all(items):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item: give names separated by single commas")
    return tuple(items)


def parse_seed(text: str) -> int:
    """A seed: an integer in 0 .. :data:`MAX_SEED`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not in 0..{MAX_SEED}")
    return value


def thread_count(text: str) -> int:
    """``--threads``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} threads: must be >= 1")
    return value


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether that device exists is checked when it is used."""
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device: use auto, cpu, cuda or cuda:N")


def add_device_argument(g, help: str = "auto (default: cuda if present), cpu, cuda or cuda:N") -> None:
    g.add_argument("--device", default="auto", type=device_name, metavar="DEVICE", help=help)


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
    g.add_argument("--seed", type=parse_seed, default=0, help="random seed; CPU runs are reproducible (default 0)")
    add_device_argument(g)
    g.add_argument("--threads", type=thread_count, default=None, metavar="T",
                   help="torch CPU threads (default: half the cores, at least 1; small models train as fast or "
                        "faster, and the other half is left to the MLflow writer)")
    g.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted test bound (default 100)")
    g.add_argument("--amp", default="none", choices=("none", "bf16"), help="bf16 autocast (default none)")
    g.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="run each train step (batch gather, forward, backward, Adam) as one CUDA-graph replay "
                        "(default: on when the device is CUDA, off on CPU)")
    g.add_argument("--checkpoint-every", type=checkpoint_every, metavar="N|TIME",
                   default=checkpoint_every(DEFAULT_TRAIN_CHECKPOINT_EVERY),
                   help="save the training state (local file and run artifact checkpoint/state.pt; tracked runs "
                        "only) every N epochs, or, given a time (30s, 10m, 1h), at the end of the first epoch "
                        f"that ends that long after the last save; 0: never (default {DEFAULT_TRAIN_CHECKPOINT_EVERY})")
    g.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the local checkpoint of a finished run (removed by default)")
    g.add_argument("--resume", default=None, metavar="RUN_ID",
                   help="continue the killed run RUN_ID from its last checkpoint (local, else its MLflow "
                        "artifact) in a new run; give the same training options. Without a usable checkpoint "
                        "it stops (exit 2) unless --fresh-if-missing is given")
    g.add_argument("--fresh-if-missing", action="store_true",
                   help="with --resume: when RUN_ID has no usable checkpoint (none saved, not fetchable, or made "
                        "with other options), train from epoch 1 in a new run instead of stopping")
    g.add_argument("--eval-batch-size", type=int, default=500, metavar="N",
                   help="examples per batch when evaluating val/test (default 500; a GPU takes far more)")


def add_tracking_arguments(p: argparse.ArgumentParser, default_experiment: str | None) -> None:
    g = p.add_argument_group("tracking (MLflow)")
    g.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    g.add_argument("--experiment", default=default_experiment, metavar="NAME",
                   help=f"MLflow experiment (default {default_experiment or 'the study name'})")
    g.add_argument("--no-track", action="store_true", help="log nothing to MLflow")
    g.add_argument("--no-model", action="store_true",
                   help="log no trained model (by default the trained CVAE is an MLflow logged model of the run)")


def add_model_uri_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (MLflow)")
    g.add_argument("--model", required=True, metavar="URI",
                   help="models:/NAME@ALIAS (e.g. models:/suite-cvae-digits@best), models:/NAME/VERSION, "
                        "models:/MODEL_ID, or the id of the run that logged it")
    g.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def check_writable(path: str, option: str) -> None:
    """Fail before training, not after it, when the output file ``path`` cannot be written."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None
    if target.is_dir():
        raise CLIError(f"{option} {path}: cannot write it (a folder of that name exists)")
