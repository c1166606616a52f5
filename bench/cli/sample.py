"""``cvae-bench sample``: draw images for chosen labels from a logged CVAE (label-specific synthesis)."""

from __future__ import annotations

import argparse
import math
from math import prod
from pathlib import Path

from bench.cli.arguments import add_model_uri_arguments, check_writable, parse_seed
from bench.errors import CLIError

OUTPUT_SUFFIXES = (".png", ".npz")
#: ``--out x.png``: each image enlarged (whole factor, nearest neighbour) to about this many pixels high.
SAMPLE_CELL_PX = 64


def run_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from bench.data.memory import check_fits
    from bench.tracking import load_logged_model, make_client, resolve_tracking_uri

    out = Path(args.out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CLIError(f"--out {args.out}: must end in .png (an image grid) or .npz (the arrays)")
    if args.n < 1:
        raise CLIError(f"--n {args.n}: must be an integer >= 1")
    check_writable(args.out, "--out")
    saved = load_logged_model(make_client(resolve_tracking_uri(args.tracking_uri)), args.model)
    labels = ([saved.label_index(label) for label in args.label] if args.label
              else list(range(len(saved.class_names))))
    if not math.isfinite(args.temperature) or args.temperature <= 0:
        raise CLIError(f"--temperature {args.temperature:g}: must be a finite number > 0")
    count = args.n * len(labels)  # images drawn: float32 images, their latents, and one label each
    check_fits(count * (4 * (prod(saved.config.input_shape) + saved.config.latent_dim) + 64),
               f"--n {args.n} x {len(labels)} label(s) ({count} images)")
    generator = torch.Generator().manual_seed(args.seed)
    y = [label for label in labels for _ in range(args.n)]
    images = saved.sample(y, temperature=args.temperature, generator=generator)  # (len(y), C, H, W) in [0, 1]
    if out.suffix.lower() == ".png":
        from bench.figures.compute import image_grid
        from bench.figures.draw import save_png

        title = f"{args.n} sample(s) per label, temperature {args.temperature:g}, seed {args.seed}"
        save_png(image_grid(images, nrow=args.n, title=title, display_px=SAMPLE_CELL_PX,
                            row_labels=[saved.class_names[i] for i in labels]), out)
    else:
        np.savez(out, images=images.numpy().astype(np.float32), labels=np.asarray(y, dtype=np.int64),
                 class_names=np.asarray(saved.class_names))
    names = ", ".join(saved.class_names[i] for i in labels)
    print(f"cvae-bench sample: {args.n} image(s) of {tuple(images.shape[1:])} for each of {len(labels)} label(s) "
          f"({names}), temperature {args.temperature:g}, seed {args.seed} -> {out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sample", help="draw images for chosen labels from a logged or registered model",
        description="Sample a trained CVAE for chosen labels: z ~ N(0, T^2 I), decoder means in [0, 1]. "
                    "--out x.png writes a grid with one row per label, the label's name at its left, each image "
                    f"enlarged to about {SAMPLE_CELL_PX} pixels; --out x.npz writes `images` "
                    "(N*labels, C, H, W) float32 and `labels` (class indices).")
    add_model_uri_arguments(p)
    g = p.add_argument_group("sampling")
    g.add_argument("--label", action="append", default=None, metavar="L",
                   help="a class index or class name; repeat for several (default: every class)")
    g.add_argument("--n", type=int, default=8, metavar="N", help="images per label (default 8)")
    g.add_argument("--seed", type=parse_seed, default=0, help="seed of the latent draws (default 0)")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="standard deviation of the latent prior draws (default 1; lower: more typical images)")
    g.add_argument("--out", required=True, metavar="FILE", help="output file: .png (grid) or .npz (arrays)")
    p.set_defaults(func=run_sample)
    return p
