"""A small classifier trained on the training split, used to judge class-conditional samples.

``test_cond_acc`` = accuracy of this classifier on images generated for each class from the prior
(decoder means); ``classifier_test_acc`` = its accuracy on the real test split, the ceiling the
first number should be read against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.data import DataSplits
from bench.evaluation.variety import conditional_samples
from models import CVAE

_CACHE: dict[tuple, nn.Module] = {}


def _make_net(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    if h >= 16:
        return nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 256), nn.ReLU(), nn.Linear(256, num_classes))


def train_classifier(data: DataSplits, *, seed: int = 0, epochs: int | None = None, batch_size: int = 128) -> nn.Module:
    """Train (or fetch from this process's cache) the judge classifier for ``data``."""
    device = data.train.x.device
    key = (data.name, len(data.train), data.input_shape, seed, str(device))
    if key in _CACHE:
        return _CACHE[key]
    n = len(data.train)
    epochs = epochs or max(3, min(40, 60_000 // n))  # ~60k examples seen at least: digits 40 epochs, MNIST 3
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net = _make_net(data.input_shape, data.num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = F.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    _CACHE[key] = net
    return net


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of the images x (N, C, H, W) that ``net`` labels y (N,); one read back at the end."""
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for s in range(0, len(y), batch_size):
        correct += (net(x[s:s + batch_size]).argmax(1) == y[s:s + batch_size]).sum()
    return correct.item() / len(y)


@torch.no_grad()
def conditional_accuracy(model: CVAE, net: nn.Module, num_classes: int, per_class: int) -> float:
    """Fraction of prior samples generated for class k that the classifier labels k."""
    return accuracy(net, *conditional_samples(model, num_classes, per_class))
