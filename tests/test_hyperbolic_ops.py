"""geoopt's ball operations and hrq's layers/kernels against float64 closed forms."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from closed_forms import dist, expmap0, logmap0, mobius_add, mobius_matvec, random_ball_points
from hrq.manifold import mobius_add as mobius_add_fused
from hrq.manifold import poincare_ball, poincare_distance, project
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


# --- hrq's fused Poincaré distance (the relation loss's hot path) against geoopt's dist ---

DIST_CURVATURES = st.sampled_from([0.5, 1.0, 2.0])
DIST_RADII = st.sampled_from([0.5, 0.95, 0.999, 1 - 1e-6])


def _ball_points(seed, shape, c, radius, dtype=torch.float64):
    """Points ``shape`` of the ball: half with norm uniform in (0, radius/sqrt(c)), half at
    radius/sqrt(c) (pairs of those near the boundary reach geoopt's artanh clamp)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(shape, generator=g, dtype=dtype), dim=-1)
    r = torch.rand(shape[:-1] + (1,), generator=g, dtype=dtype)
    r = torch.where(torch.rand(r.shape, generator=g) < 0.5, torch.ones_like(r), r)
    return d * r * radius / c**0.5


def _dist_and_grads(f, x, y, w):
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = f(x, y)
    return (out, *torch.autograd.grad((out * w).sum(), (x, y)))


@fresh
@given(seed=SEEDS, dim=DIMS, c=DIST_CURVATURES, radius=DIST_RADII)
def test_poincare_distance_matches_geoopt_values_and_gradients(seed, dim, c, radius):
    x = _ball_points(seed, (16, 1, dim), c, radius)
    y = _ball_points(seed + 1, (16, 5, dim), c, radius)
    w = torch.randn(16, 5, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    ours = _dist_and_grads(lambda a, b: poincare_distance(a, b, c), x, y, w)
    ref = _dist_and_grads(poincare_ball(c).dist, x, y, w)
    # Near the boundary artanh's slope 1/(1 - z^2) amplifies geoopt's ~1e-12 rounding of its
    # argument z (hypothesis found radius 0.999999, c=0.5: geoopt 8e-7 off mpmath, ours 5e-10):
    # the tolerance grows with that slope and is 1e-9 relative elsewhere.
    z = torch.tanh(ref[0] * c**0.5 / 2)
    tol = 1e-12 + 1e-9 * ref[0].abs() + 2 / c**0.5 * 1e-11 / (1 - z * z).clamp_min(1e-300)
    assert ((ours[0] - ref[0]).abs() <= tol).all(), ((ours[0] - ref[0]).abs() / tol).max()
    # gradients near the boundary reach ~1e6 and a row of x sums 5 of them with signs: geoopt's
    # 1e-10 relative rounding there is absolute to their scale (ours agrees with mpmath to ~1e-13)
    # gradients of distances within the steep zone (slope > 1e6) carry geoopt's amplified error
    # in full; the values there are checked above
    steep = (1 - z * z) < 1e-6  # [16, 5]
    masks = (~steep.any(1, keepdim=True), ~steep)  # x's rows meet all 5 candidates
    for a, b, keep in zip(ours[1:], ref[1:], masks):
        keep = keep.unsqueeze(-1).expand_as(a)
        torch.testing.assert_close(a[keep], b[keep], rtol=1e-7, atol=1e-9 * b.abs().max().item())


@pytest.mark.parametrize(
    "x_shape, y_shape",
    [((50, 1, 32), (50, 51, 32)), ((8, 50, 1, 32), (8, 50, 51, 32)), ((6, 7), (6, 7)),
     ((7,), (5, 7)), ((4, 1, 7), (1, 5, 7)), ((3, 5, 7), (5, 7)), ((3, 5, 7), (3, 1, 7))],
)
def test_poincare_distance_broadcasts_like_geoopt(x_shape, y_shape):
    c = 1.0
    x, y = _ball_points(0, x_shape, c, 0.99), _ball_points(1, y_shape, c, 0.99)
    shape = torch.broadcast_shapes(x_shape, y_shape)[:-1]
    w = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    ours = _dist_and_grads(lambda a, b: poincare_distance(a, b, c), x, y, w)
    ref = _dist_and_grads(poincare_ball(c).dist, x, y, w)
    assert ours[0].shape == shape and ours[1].shape == x_shape and ours[2].shape == y_shape
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    y_only = y.clone().requires_grad_()  # one input without a gradient
    (g,) = torch.autograd.grad((poincare_distance(x, y_only, c) * w).sum(), y_only)
    torch.testing.assert_close(g, ref[2], rtol=1e-8, atol=1e-10)
    with torch.no_grad():  # the path without a graph gives the same values
        torch.testing.assert_close(poincare_distance(x, y, c), ref[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_poincare_distance_gradcheck(c):
    x = _ball_points(11, (3, 1, 5), c, 0.9)
    y = _ball_points(12, (3, 4, 5), c, 0.9)
    assert torch.autograd.gradcheck(
        lambda a, b: poincare_distance(a, b, c), (x.requires_grad_(), y.requires_grad_())
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_poincare_distance_of_identical_points_is_zero_with_finite_gradient(dtype, c):
    """At x == y the distance has a kink: ours gives the zero subgradient; geoopt's gradient there
    is zero or, by the rounding of its Möbius numerator, a vector of norm 2/(1 - c||x||^2).
    Candidates y[:, 1:] that differ from x match geoopt in float64 (for float32 points: geoopt's
    float64 result on them, which ours is closer to than geoopt's float32 one: near the boundary
    geoopt's float32 gradients are ~1e-2 off, ours ~1e-5)."""
    x = project(_ball_points(3, (12, 1, 16), c, 0.999, dtype), c)  # onto geoopt's radius
    y = torch.cat([x, project(_ball_points(4, (12, 3, 16), c, 0.999, dtype), c)], 1)
    w = torch.ones(12, 4, dtype=dtype)
    d, gx, gy = _dist_and_grads(lambda a, b: poincare_distance(a, b, c), x, y, w)
    ref, ref_gx, ref_gy = _dist_and_grads(poincare_ball(c).dist, x, y, w)
    assert torch.isfinite(d).all() and torch.isfinite(gx).all() and torch.isfinite(gy).all()
    assert torch.isfinite(ref_gx).all() and torch.isfinite(ref_gy).all()
    assert d.dtype == gx.dtype == gy.dtype == dtype
    assert torch.equal(d[:, 0], torch.zeros(12, dtype=dtype))
    torch.testing.assert_close(ref[:, 0], d[:, 0], rtol=0, atol=1e-6)
    assert torch.equal(gy[:, 0], torch.zeros_like(gy[:, 0]))
    # geoopt's there: 0, or a unit vector (in the ball's metric) of its numerator's rounding
    lam = 2 / (1 - c * x[:, 0].pow(2).sum(-1))
    geo = ref_gy[:, 0].norm(dim=-1) / lam
    assert torch.all((geo == 0) | ((geo - 1).abs() < 1e-3))
    other = _dist_and_grads(poincare_ball(c).dist, x.double(), y[:, 1:].double(), w[:, 1:].double())
    single = dtype == torch.float32
    torch.testing.assert_close(d[:, 1:].double(), other[0], rtol=1e-3 if single else 1e-9,
                               atol=1e-12)
    for ours, want in zip((gx, gy[:, 1:]), other[1:]):
        torch.testing.assert_close(ours.double(), want, rtol=1e-4 if single else 1e-7,
                                   atol=(1e-4 if single else 1e-9) * want.abs().max().item())
