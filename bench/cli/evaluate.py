"""``cvae-bench evaluate``: the final test metrics of a logged CVAE on a data set, under train's metric names."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.arguments import (
    add_data_arguments,
    add_device_argument,
    add_model_uri_arguments,
    check_writable,
    parse_seed,
)
from bench.errors import CLIError


def check_compatible(saved, data) -> None:
    """A data set whose image shape or classes differ from the model's is one line naming both."""
    shape, classes = tuple(saved.config.input_shape), tuple(saved.class_names)
    if tuple(data.input_shape) != shape or tuple(data.class_names) != classes:
        def describe(s, c) -> str:
            return f"{'x'.join(map(str, s))} images and {len(c)} classes ({', '.join(c[:12])}{', ...' if len(c) > 12 else ''})"
        raise CLIError(f"dataset {data.name} has {describe(data.input_shape, data.class_names)}; the model takes "
                       f"{describe(shape, classes)}")


def run_evaluate(args: argparse.Namespace) -> int:
    from bench.data import load_dataset
    from bench.data.memory import check_iw_fits
    from bench.evaluation import final_metrics
    from bench.tracking import load_logged_model, make_client, resolve_tracking_uri
    from bench.training import resolve_device

    if args.metrics_json:
        check_writable(args.metrics_json, "--metrics-json")
    if args.iw_samples < 1:
        raise CLIError(f"--iw-samples {args.iw_samples}: must be an integer >= 1")
    device = resolve_device(args.device)
    saved = load_logged_model(make_client(resolve_tracking_uri(args.tracking_uri)), args.model, map_location=device)
    check_iw_fits(args.iw_samples, tuple(saved.config.input_shape), device)
    data = load_dataset(args.dataset, args.data_root, download=args.download, image_size=args.image_size,
                        seed=args.seed, limit=args.limit)
    check_compatible(saved, data)
    metrics = final_metrics(saved.model, data.to(device), iw_samples=args.iw_samples, seed=args.seed)
    print(f"cvae-bench evaluate: {args.model} on {data.name} ({len(data.test)} test examples); "
          "final metrics (nats per example unless named):")
    for key, value in metrics.items():
        print(f"  {key:<22} {value:.4f}")
    if args.metrics_json:
        Path(args.metrics_json).write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate", help="score a logged or registered model again on a data set",
        description="Compute the final test metrics of a logged CVAE (the names `train` logs: test_neg_elbo, "
                    "test_iw_nll, test_active_units, test_cond_acc, ...) on a data set's test split. With the "
                    "data set and seed it was trained on, they equal the logged ones.")
    add_model_uri_arguments(p)
    add_data_arguments(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--iw-samples", type=int, default=100, help="k of the importance-weighted test bound (default 100)")
    g.add_argument("--seed", type=parse_seed, default=0,
                   help="seed of the data split and of the evaluation's draws (default 0, train's default)")
    add_device_argument(g)
    g.add_argument("--metrics-json", default=None, metavar="PATH",
                   help="also write the metrics as a flat JSON object (default: none written)")
    p.set_defaults(func=run_evaluate)
    return p
