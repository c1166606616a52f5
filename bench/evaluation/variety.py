"""How much class-conditional samples differ: the variety ``test_cond_acc`` cannot see.

A judge classifier scores a model that draws its class mean for every z as well as one that draws
varied images of the class. :func:`sample_variety` tells them apart: the per-pixel standard
deviation of the images drawn for one label, averaged over pixels and labels. It is 0 when the
decoder ignores z (posterior collapse: every draw of a label is the same image).
"""

from __future__ import annotations

import torch

from models import CVAE


@torch.no_grad()
def conditional_samples(model: CVAE, num_classes: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` prior draws (decoder means, z ~ N(0, I) from the global RNG) for each class:
    images (num_classes * per_class, C, H, W), label-major, and their labels."""
    device = next(model.parameters()).device
    y = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    model.eval()
    x = model.generate(y)
    model.train()
    return x, y


@torch.no_grad()
def sample_variety(images: torch.Tensor, num_classes: int) -> float:
    """Mean per-pixel standard deviation across the draws of each label, averaged over labels, in the
    images' own units (pixel intensity in [0, 1] for decoder means).

    ``images``: (num_classes * N, C, H, W), label-major as :func:`conditional_samples` makes them.
    The deviation is the population one (divisor N): one draw per label gives 0.
    """
    per_label = images.reshape(num_classes, -1, *images.shape[1:]).double()
    return per_label.std(dim=1, correction=0).mean().item()
