"""Encoder and decoder networks. The condition c arrives one-hot, (B, K), and is concatenated at
both ends: to the encoder input and to the decoder input (as in the seed article, but one-hot).

Encoders map (x (B, C, H, W), c (B, K)) to features h (B, F); the CVAE's heads read mu/logvar
(and, for flows, amortised flow parameters) from h. Decoders map (z (B, L), c (B, K)) to
likelihood parameters (B, P, D), D = C*H*W.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear + ReLU for each consecutive pair of widths (ReLU after every layer)."""
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """[x.flatten(), c] -> hidden[0] -> ... -> hidden[-1]; the seed preset is one layer of 128."""

    def __init__(self, input_dim: int, num_classes: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp([input_dim + num_classes, *hidden])
        self.feature_dim = hidden[-1]

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat((x.flatten(1), c), dim=1))


class MLPDecoder(nn.Module):
    """[z, c] -> hidden[-1] -> ... -> hidden[0] -> P*D likelihood parameters."""

    def __init__(self, latent_dim: int, num_classes: int, hidden: tuple[int, ...], input_dim: int,
                 params_per_dim: int) -> None:
        super().__init__()
        widths = [latent_dim + num_classes, *reversed(hidden)]
        self.net = nn.Sequential(mlp(widths), nn.Linear(widths[-1], params_per_dim * input_dim))
        self.params_per_dim = params_per_dim

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat((z, c), dim=1)).unflatten(1, (self.params_per_dim, -1))


class ConvEncoder(nn.Module):
    """The one-hot condition enters as K constant image planes; each 4x4 stride-2 convolution
    halves height and width; the flattened maps (with c again) go through the MLP ``hidden``."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: tuple[int, ...],
                 hidden: tuple[int, ...]) -> None:
        super().__init__()
        c_in, h, w = input_shape
        convs: list[nn.Module] = []
        for ch in channels:
            convs += [nn.Conv2d(c_in + (num_classes if not convs else 0), ch, 4, stride=2, padding=1), nn.ReLU()]
            c_in = ch
        self.convs = nn.Sequential(*convs)
        flat = channels[-1] * (h >> len(channels)) * (w >> len(channels))
        self.head = mlp([flat + num_classes, *hidden])
        self.feature_dim = hidden[-1]

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        planes = c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        maps = self.convs(torch.cat((x, planes), dim=1))
        return self.head(torch.cat((maps.flatten(1), c), dim=1))


class ConvDecoder(nn.Module):
    """[z, c] -> MLP -> (channels[-1], H/2^n, W/2^n) maps -> transposed convolutions -> (P*C, H, W)."""

    def __init__(self, latent_dim: int, num_classes: int, input_shape: tuple[int, int, int],
                 channels: tuple[int, ...], hidden: tuple[int, ...], params_per_dim: int) -> None:
        super().__init__()
        c_out, h, w = input_shape
        n = len(channels)
        self.map_shape = (channels[-1], h >> n, w >> n)
        widths = [latent_dim + num_classes, *reversed(hidden)]
        self.head = nn.Sequential(mlp(widths), nn.Linear(widths[-1], channels[-1] * (h >> n) * (w >> n)), nn.ReLU())
        ups: list[nn.Module] = []
        rev = list(reversed(channels))
        for ch_in, ch_out in zip(rev[:-1], rev[1:]):
            ups += [nn.ConvTranspose2d(ch_in, ch_out, 4, stride=2, padding=1), nn.ReLU()]
        ups.append(nn.ConvTranspose2d(rev[-1], params_per_dim * c_out, 4, stride=2, padding=1))
        self.ups = nn.Sequential(*ups)
        self.params_per_dim = params_per_dim

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        maps = self.head(torch.cat((z, c), dim=1)).view(-1, *self.map_shape)
        # (B, P*C, H, W) with parameter-major channels -> (B, P, C*H*W) in x.flatten(1) order.
        return self.ups(maps).flatten(1).unflatten(1, (self.params_per_dim, -1))
