"""test_cond_std: the variety of class-conditional samples, 0 when the decoder ignores z."""

from __future__ import annotations

import pytest
import torch

from bench.evaluation.variety import conditional_samples, sample_variety
from models import CVAE, CVAEConfig


def test_variety_is_the_per_pixel_deviation_across_the_draws_of_a_label():
    same = torch.full((3, 1, 2, 2), 0.4)  # label 0: three identical draws
    spread = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2, 2)])  # label 1: 0, 1, 0
    images = torch.cat([same, spread])
    # label 1: population std of (0, 1, 0) = sqrt(2) / 3 at every pixel; label 0 adds 0; mean over labels
    assert sample_variety(images, num_classes=2) == pytest.approx((2 ** 0.5 / 3) / 2)
    assert sample_variety(images[:1].repeat(4, 1, 1, 1), num_classes=2) == 0.0
    assert sample_variety(torch.rand(10, 1, 3, 3), num_classes=10) == 0.0  # one draw per label: no deviation


def test_a_decoder_that_ignores_z_has_no_variety_one_that_reads_it_has_some():
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(input_shape=(1, 8, 8), num_classes=3, hidden=(16,), latent_dim=4))
    images, labels = conditional_samples(model, num_classes=3, per_class=20)
    assert images.shape == (60, 1, 8, 8) and labels.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    assert sample_variety(images, 3) > 1e-3
    with torch.no_grad():
        model.decoder.net[0][0].weight[:, :4] = 0  # the first layer's z columns: z no longer reaches the output
    assert sample_variety(conditional_samples(model, num_classes=3, per_class=20)[0], 3) == pytest.approx(0, abs=1e-7)
    assert model.training  # left in training mode, as found
