"""geoopt's ball operations and hrq's layers/kernels against float64 closed forms."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from closed_forms import dist, expmap0, logmap0, mobius_add, mobius_matvec, random_ball_points
from hrq.manifold import mobius_add as mobius_add_fused
from hrq.manifold import poincare_ball, project
from hrq.nn import HyperbolicActivation, MobiusLinear
from hrq.quantize import nearest, nearest_scores

CURVATURES = st.sampled_from([0.1, 0.5, 1.0, 4.0])
SEEDS = st.integers(0, 2**31 - 1)
DIMS = st.integers(2, 33)
fresh = settings(max_examples=25, deadline=None)


def _points(seed, n, dim, c, max_radius=0.95):
    g = torch.Generator().manual_seed(seed)
    return random_ball_points(n, dim, c, max_radius, generator=g)


@fresh
@given(seed=SEEDS, dim=DIMS, c=CURVATURES)
def test_mobius_add_matches_closed_form(seed, dim, c):
    x, y = _points(seed, 64, dim, c).chunk(2)
    ball = poincare_ball(c)
    torch.testing.assert_close(ball.mobius_add(x, y), mobius_add(x, y, c), rtol=1e-9, atol=1e-10)


@fresh
@given(seed=SEEDS, dim=DIMS, c=CURVATURES)
def test_distance_matches_eq1(seed, dim, c):
    u, v = _points(seed, 64, dim, c).chunk(2)
    ball = poincare_ball(c)
    torch.testing.assert_close(ball.dist(u, v), dist(u, v, c), rtol=1e-7, atol=1e-7)


@fresh
@given(seed=SEEDS, dim=DIMS, c=CURVATURES)
def test_exp0_log0_match_closed_form_and_invert(seed, dim, c):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(32, dim, generator=g, dtype=torch.float64)
    # tangent norms up to 2/sqrt(c): exp0 lands at radius <= tanh(2) = 0.96, inside geoopt's
    # float64 projection radius 1 - 1e-5 (beyond it geoopt clamps by design).
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(32, 1, generator=g, dtype=v.dtype) * 2 / c**0.5
    ball = poincare_ball(c)
    torch.testing.assert_close(ball.expmap0(v), expmap0(v, c), rtol=1e-9, atol=1e-10)
    y = _points(seed, 32, dim, c)
    torch.testing.assert_close(ball.logmap0(y), logmap0(y, c), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ball.expmap0(ball.logmap0(y)), y, rtol=1e-9, atol=1e-10)


@fresh
@given(seed=SEEDS, c=CURVATURES, din=st.integers(2, 16), dout=st.integers(2, 16))
def test_mobius_linear_matches_closed_form(seed, c, din, dout):
    ball = poincare_ball(c)
    layer = MobiusLinear(din, dout, ball).double()
    with torch.no_grad():
        layer.bias.copy_(_points(seed + 1, 1, dout, c, 0.5)[0])
    x = _points(seed, 16, din, c, 0.8)
    want = mobius_add(mobius_matvec(layer.weight.detach(), x, c), layer.bias.detach(), c)
    torch.testing.assert_close(layer(x), want, rtol=1e-8, atol=1e-9)


def test_hyperbolic_activation_is_relu_in_tangent_space():
    c = 1.0
    ball = poincare_ball(c)
    x = _points(3, 50, 8, c)
    want = expmap0(torch.relu(logmap0(x, c)), c)
    want = torch.nan_to_num(want)  # rows whose ReLU is all zero map to the origin
    torch.testing.assert_close(HyperbolicActivation(ball)(x), want, rtol=1e-9, atol=1e-10)


@fresh
@given(seed=SEEDS, dim=DIMS, c=CURVATURES, s=st.integers(1, 70))
def test_nearest_codeword_is_brute_force_argmin_of_eq1(seed, dim, c, s):
    x = _points(seed, 100, dim, c)
    book = _points(seed + 7, s, dim, c)
    brute = dist(x.unsqueeze(1), book.unsqueeze(0), c)  # [N, s] by broadcasting, float64
    got = nearest(x, book, c)
    # Ties in float64 are measure-zero; compare distances so a tie could not fail the test.
    torch.testing.assert_close(brute.gather(1, got[:, None]).squeeze(1), brute.min(1).values)
    # The score is a monotone function of the distance row by row: orderings agree.
    scores = nearest_scores(x, book, c)
    assert torch.equal(scores.argsort(1), brute.argsort(1)) or s == 1 or torch.allclose(
        brute.gather(1, scores.argsort(1)), brute.sort(1).values
    )


@fresh
@given(seed=SEEDS, dim=DIMS, s=st.integers(1, 70))
def test_euclidean_nearest_is_l2_argmin(seed, dim, s):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(100, dim, generator=g, dtype=torch.float64)
    book = torch.randn(s, dim, generator=g, dtype=torch.float64)
    brute = torch.cdist(x, book)
    got = nearest(x, book)
    torch.testing.assert_close(brute.gather(1, got[:, None]).squeeze(1), brute.min(1).values)


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_near_boundary_operations_are_finite(c):
    """float32 points with 1 - sqrt(c)||x|| down to 1e-7 go through geoopt's projection."""
    ball = poincare_ball(c)
    gaps = torch.tensor([1e-1, 1e-3, 1e-5, 1e-7])
    d = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    x = (d * ((1 - gaps) / c**0.5)[:, None]).float().requires_grad_()
    y = ball.projx(x)
    out = ball.logmap0(ball.mobius_add(y, -y.flip(0))) + ball.dist(y, y.flip(0))[:, None]
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


# --- hrq's fused Möbius addition and projection (the quantizer's hot path) against geoopt ---


@fresh
@given(seed=SEEDS, dim=DIMS, c=CURVATURES, radius=st.sampled_from([0.5, 0.95, 1 - 1e-6]))
def test_fused_mobius_add_matches_geoopt_values_and_gradients(seed, dim, c, radius):
    x, y = _points(seed, 64, dim, c, radius).chunk(2)
    x.requires_grad_()
    y.requires_grad_()
    ball = poincare_ball(c)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    ours, ref = mobius_add_fused(x, y, c), ball.mobius_add(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    g_ours = torch.autograd.grad((ours * w).sum(), (x, y))
    g_ref = torch.autograd.grad((ref * w).sum(), (x, y))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_fused_mobius_add_gradcheck(c):
    x, y = _points(11, 20, 5, c, 0.7).chunk(2)
    assert torch.autograd.gradcheck(
        lambda a, b: mobius_add_fused(a, b, c), (x.requires_grad_(), y.requires_grad_())
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_project_matches_geoopt_projx(dtype, c):
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 0.9, 0.999, 1.0, 1.5, 1e3], dtype=dtype) / c**0.5
    x = (torch.nn.functional.normalize(torch.randn(6, 8, generator=g, dtype=dtype), dim=-1)
         * scales[:, None]).requires_grad_()
    ours, ref = project(x, c), poincare_ball(c).projx(x)
    torch.testing.assert_close(ours, ref)
    w = torch.randn(6, 8, generator=g, dtype=dtype)
    torch.testing.assert_close(torch.autograd.grad((ours * w).sum(), x)[0],
                               torch.autograd.grad((ref * w).sum(), x)[0])
