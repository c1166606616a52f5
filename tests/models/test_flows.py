"""Latent normalizing flows: log-determinants against autograd Jacobians, invertibility
constraints under adversarial parameters, the IAF autoregressive property, shapes and gradients."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.autograd.functional import jacobian

from models.config import FlowConfig
from models.flows import LatentFlow, build_flow
from models.flows.iaf import IAFStep, InverseAutoregressiveFlow, made_masks
from models.flows.planar import PlanarFlow, planar_step, planar_u_hat
from models.flows.radial import RadialFlow, radial_constraints

B, D, H = 4, 5, 3
KINDS = ("planar", "radial", "iaf")


def make_flow(kind: str, length: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> LatentFlow:
    torch.manual_seed(seed)
    return build_flow(FlowConfig(kind=kind, length=length, iaf_hidden=16), D, H).to(dtype)


def per_example_jacobians(fn, z0: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """(B, D, D): the Jacobian of z0[b] -> fn(z0[b], h[b]) for each example b."""
    return torch.stack([
        jacobian(lambda z, hb=h[b:b + 1]: fn(z.unsqueeze(0), hb)[0].squeeze(0), z0[b])
        for b in range(z0.shape[0])
    ])


@pytest.mark.parametrize("length", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_log_det_matches_autograd_jacobian(kind: str, length: int) -> None:
    flow = make_flow(kind, length)
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(B, D, generator=gen, dtype=torch.float64)
    h = torch.randn(B, H, generator=gen, dtype=torch.float64)

    _, sum_log_det = flow(z0, h)
    sign, log_abs_det = torch.linalg.slogdet(per_example_jacobians(flow, z0, h))

    assert torch.all(sign > 0), "every flow here is orientation preserving"
    torch.testing.assert_close(sum_log_det, log_abs_det, rtol=1e-6, atol=1e-6)
    # Guard against a vacuous pass: the flow must actually change the density.
    assert sum_log_det.abs().max() > 1e-3


def adversarial_planar(length: int) -> tuple[PlanarFlow, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A planar flow whose every layer has unit w, u = -10 w (w.u = -10, the raw layer folds space
    over) and b = 0.3, whatever h is. Returns (flow, u, w, b)."""
    torch.manual_seed(0)
    w = torch.randn(D, dtype=torch.float64)
    w = w / w.norm()
    u = -10.0 * w
    b = torch.tensor([0.3], dtype=torch.float64)
    flow = PlanarFlow(D, H, length=length).double()
    with torch.no_grad():
        flow.amortiser.weight.zero_()
        flow.amortiser.bias.copy_(torch.cat([u, w, b]).repeat(length))
    return flow, u, w, b


def test_planar_adversarial_u_keeps_layer_invertible() -> None:
    flow, u, w, b = adversarial_planar(length=2)
    h = torch.randn(1, H, dtype=torch.float64)
    u_raw, w_raw, _ = flow.raw_params(h)
    torch.testing.assert_close(u_raw[0, 0], u)
    torch.testing.assert_close(w_raw[0, 1], w)

    u_hat = planar_u_hat(u_raw, w_raw)
    assert torch.all((w_raw * u_hat).sum(-1) >= -1.0)

    # Many z, including points with w.z + b = 0 where 1 + u_hat.psi is smallest.
    z = torch.randn(2000, D, dtype=torch.float64) * 3.0
    z[:100] -= ((z[:100] @ w + b) / (w @ w)).unsqueeze(-1) * w
    t = torch.tanh(z @ w + b)
    det_factor = 1.0 + (1.0 - t * t) * (w @ u_hat[0, 0])
    assert torch.all(det_factor > 0)
    assert torch.any((1.0 + (1.0 - t * t) * (w @ u)) < 0), "setup must be adversarial for the raw u"

    _, sum_log_det = flow(z, h.expand(z.shape[0], H))
    assert torch.all(torch.isfinite(sum_log_det))

    # The module itself (not just planar_u_hat) must apply the constraint: det J > 0 everywhere.
    one_layer, *_ = adversarial_planar(length=1)
    z_few, h_few = z[90:110], h.expand(20, H)
    sign, log_abs_det = torch.linalg.slogdet(per_example_jacobians(one_layer, z_few, h_few))
    assert torch.all(sign > 0)
    # det J is ~4.5e-5 where w.z + b = 0, so the 1e-8 guard inside the log shifts it by ~2e-4 nats.
    torch.testing.assert_close(one_layer(z_few, h_few)[1], log_abs_det, rtol=0, atol=1e-3)


def test_planar_adversarial_u_is_monotone_along_w() -> None:
    flow, u, w, b = adversarial_planar(length=1)
    z_perp = torch.randn(D, dtype=torch.float64)
    z_perp = z_perp - (z_perp @ w) * w
    ts = torch.linspace(-5.0, 5.0, 2001, dtype=torch.float64)
    z = z_perp + ts.unsqueeze(-1) * w
    h = torch.randn(z.shape[0], H, dtype=torch.float64)

    z_out, _ = flow(z, h)
    assert torch.all((z_out @ w).diff() > 0)

    raw_out, _ = planar_step(z, u.expand_as(z), w.expand_as(z), b.expand(z.shape[0]))
    assert not torch.all((raw_out @ w).diff() > 0), "setup must fold space for the raw u"


def test_radial_adversarial_beta_keeps_layer_invertible() -> None:
    torch.manual_seed(0)
    flow = RadialFlow(D, H, length=2).double()
    z_ref = torch.randn(D, dtype=torch.float64)
    # alpha' and beta' very negative: tiny alpha, and beta pushed towards -alpha.
    raw = torch.cat([z_ref, torch.tensor([-30.0, -50.0], dtype=torch.float64)])
    with torch.no_grad():
        flow.amortiser.weight.zero_()
        flow.amortiser.bias.copy_(raw.repeat(2))
    z = torch.cat([z_ref.unsqueeze(0), z_ref + 1e-6 * torch.randn(10, D, dtype=torch.float64),
                   torch.randn(500, D, dtype=torch.float64) * 3.0])
    h = torch.randn(z.shape[0], H, dtype=torch.float64, requires_grad=True)

    _, alpha_raw, beta_raw = flow.raw_params(h)
    torch.testing.assert_close(beta_raw, torch.full_like(beta_raw, -50.0))
    alpha, beta = radial_constraints(alpha_raw, beta_raw)
    assert torch.all(alpha > 0)
    assert torch.all(beta >= -alpha)

    z_out, sum_log_det = flow(z, h)
    assert torch.all(torch.isfinite(z_out))
    assert torch.all(torch.isfinite(sum_log_det))
    sum_log_det.sum().backward()
    assert torch.all(torch.isfinite(h.grad))


def test_radial_constraint_is_needed() -> None:
    """Without the constraint (beta < -alpha) the radial det goes negative: the check above bites."""
    alpha = torch.tensor([1.0], dtype=torch.float64)
    beta = torch.tensor([-3.0], dtype=torch.float64)
    r = torch.tensor([0.5], dtype=torch.float64)
    assert torch.all(1.0 + beta / (alpha + r) < 0)
    _, beta_c = radial_constraints(torch.tensor([0.0]), torch.tensor([-1e4]))
    assert beta_c >= -torch.nn.functional.softplus(torch.tensor([0.0]))


def test_made_masks_are_autoregressive() -> None:
    input_mask, output_mask = made_masks(D, 16)
    # connectivity[i, j] > 0 iff output i can see input j.
    connectivity = output_mask @ input_mask
    assert torch.all(connectivity.triu() == 0)
    assert torch.all(connectivity.tril(-1)[torch.ones(D, D).tril(-1).bool()] > 0)


def test_iaf_step_jacobian_is_lower_triangular() -> None:
    torch.manual_seed(0)
    step = IAFStep(D, H, hidden=16).double()
    with torch.no_grad():  # random, non-trivial weights so the test does not pass by zeros
        for p in step.parameters():
            p.normal_(0.0, 0.5)
    z = torch.randn(B, D, dtype=torch.float64)
    h = torch.randn(B, H, dtype=torch.float64)

    jac = per_example_jacobians(step, z, h)
    assert torch.all(jac.triu(1) == 0)
    assert torch.all(jac.tril(-1).abs().sum((-1, -2)) > 1e-3)
    _, s = step.shift_and_gate(z, h)
    torch.testing.assert_close(jac.diagonal(dim1=-2, dim2=-1), torch.sigmoid(s))
    _, log_det = step(z, h)
    torch.testing.assert_close(log_det, torch.log(torch.sigmoid(s)).sum(-1))


def test_iaf_reverses_order_between_steps() -> None:
    """With one reversal, zK depends on every coordinate of z0: the full Jacobian is not triangular."""
    flow = make_flow("iaf", length=2)
    z0 = torch.randn(B, D, dtype=torch.float64)
    h = torch.randn(B, H, dtype=torch.float64)
    jac = per_example_jacobians(flow, z0, h)
    assert torch.all(jac.triu(1).abs().sum((-1, -2)) > 1e-4)
    assert torch.all(jac.tril(-1).abs().sum((-1, -2)) > 1e-4)
    single = per_example_jacobians(make_flow("iaf", length=1), z0, h)
    assert torch.all(single.triu(1) == 0)


def test_iaf_step_starts_near_identity() -> None:
    torch.manual_seed(0)
    step = IAFStep(D, H, hidden=16)
    _, s = step.shift_and_gate(torch.zeros(B, D), torch.zeros(B, H))
    assert torch.all(torch.sigmoid(s) > 0.85)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_dtype_and_gradients_to_h(kind: str, dtype: torch.dtype) -> None:
    flow = make_flow(kind, length=2, dtype=dtype)
    z0 = torch.randn(B, D, dtype=dtype)
    h = torch.randn(B, H, dtype=dtype, requires_grad=True)

    z_k, sum_log_det = flow(z0, h)

    assert z_k.shape == (B, D) and z_k.dtype == dtype
    assert sum_log_det.shape == (B,) and sum_log_det.dtype == dtype
    (z_k.pow(2).sum() + sum_log_det.sum()).backward()
    assert h.grad is not None and torch.all(torch.isfinite(h.grad)) and h.grad.abs().sum() > 0


def test_build_flow_types_and_errors() -> None:
    assert isinstance(build_flow(FlowConfig("planar", 2), D, H), PlanarFlow)
    assert isinstance(build_flow(FlowConfig("radial", 2), D, H), RadialFlow)
    iaf = build_flow(FlowConfig("iaf", 3, iaf_hidden=8), D, H)
    assert isinstance(iaf, InverseAutoregressiveFlow) and len(iaf.steps) == 3
    with pytest.raises(ValueError, match="flow='sylvester'"):
        build_flow(SimpleNamespace(kind="sylvester", length=2, iaf_hidden=8), D, H)
    with pytest.raises(ValueError, match="flow_length"):
        build_flow(SimpleNamespace(kind="planar", length=0, iaf_hidden=8), D, H)


def test_flow_rejects_wrong_shapes() -> None:
    flow = make_flow("planar", 1)
    with pytest.raises(ValueError, match="z0"):
        flow(torch.randn(B, D + 1, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    with pytest.raises(ValueError, match="h has shape"):
        flow(torch.randn(B, D, dtype=torch.float64), torch.randn(B + 1, H, dtype=torch.float64))
