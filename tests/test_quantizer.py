"""ResidualQuantizer: API, geometry, residual rules, gradients, numerics, training-only updates."""

import pytest
import torch

from closed_forms import dist, mobius_add, random_ball_points
from hrq.manifold import poincare_ball
from hrq.models import riemannian_optimizer
from hrq.quantize import QuantizerBase, ResidualQuantizer, level_sizes, usage_heatmap
from hrq.quantize.plots import usage_matrix


def _ball_points(n, dim, c, seed=0, max_radius=0.9, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return random_ball_points(n, dim, c, max_radius, generator=g).to(dtype)


def _quantizer(geometry, **kw):
    kw.setdefault("levels", 3)
    kw.setdefault("codebook_size", 16)
    kw.setdefault("dim", 8)
    return ResidualQuantizer(kw.pop("levels"), kw.pop("codebook_size"), kw.pop("dim"),
                             geometry=geometry, **kw)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_output_shapes_and_decode(geometry):
    q = _quantizer(geometry, codebook_size=[4, 8, 16])
    x = _ball_points(50, 8, 1.0)
    out = q(x)
    assert out.codes.shape == (50, 3) and out.codes.dtype == torch.long
    assert out.quantized.shape == (50, 8) and out.loss.ndim == 0
    assert [b.shape[0] for b in q.codebooks] == [4, 8, 16]
    for i, size in enumerate([4, 8, 16]):
        assert 0 <= out.codes[:, i].min() and out.codes[:, i].max() < size
    torch.testing.assert_close(q.decode(out.codes), out.quantized, atol=1e-6, rtol=1e-5)


def test_euclidean_reconstruction_is_sum_of_codewords():
    q = _quantizer("euclidean")
    x = torch.randn(40, 8)
    out = q(x)
    want = sum(q.codebooks[i][out.codes[:, i]] for i in range(3))
    torch.testing.assert_close(out.quantized, want)


def _greedy_reference(x, books, c, rule):
    """Brute-force HRQ in float64 with the closed forms: per level argmin of eq. 1."""
    r, codes, words = x, [], []
    for book in books:
        t = dist(r.unsqueeze(1), book.unsqueeze(0), c).argmin(1)
        e = book[t]
        codes.append(t)
        words.append(e)
        r = mobius_add(r, -e, c) if rule == "paper" else mobius_add(-e, r, c)
    return torch.stack(codes, -1), words


@pytest.mark.parametrize("rule", ["paper", "gyro"])
@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_codes_equal_brute_force_greedy_argmin(rule, c):
    q = _quantizer("poincare", curvature=c, residual=rule, codebook_size=32).double()
    with torch.no_grad():
        for i, b in enumerate(q.codebooks):
            b.copy_(_ball_points(32, 8, c, seed=10 + i, max_radius=0.7, dtype=torch.float64))
    x = _ball_points(300, 8, c, seed=1, dtype=torch.float64)
    want, words = _greedy_reference(x, [b.detach() for b in q.codebooks], c, rule)
    assert torch.equal(q(x).codes, want)
    # and the reconstruction follows the rule's fold
    if rule == "paper":
        y = words[0]
        for e in words[1:]:
            y = mobius_add(y, e, c)
    else:
        y = words[-1]
        for e in reversed(words[:-1]):
            y = mobius_add(e, y, c)
    torch.testing.assert_close(q.decode(want), y, rtol=1e-9, atol=1e-10)


def test_small_curvature_reproduces_euclidean_quantizer():
    eu = _quantizer("euclidean", codebook_size=32).double()
    x = torch.randn(400, 8, dtype=torch.float64) * 0.5
    ref = eu(x)
    for rule in ("paper", "gyro"):
        hy = _quantizer("poincare", curvature=1e-9, residual=rule, codebook_size=32).double()
        with torch.no_grad():
            for a, b in zip(hy.codebooks, eu.codebooks):
                a.copy_(b)
        out = hy(x)
        assert torch.equal(out.codes, ref.codes)
        torch.testing.assert_close(out.quantized, ref.quantized, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_gyro_reconstructs_exactly_along_greedy_path_and_paper_does_not(c):
    """Make the last residual of each point a codeword: gyro then reconstructs x exactly."""
    x = _ball_points(8, 6, c, seed=4, max_radius=0.8, dtype=torch.float64)
    errors = {}
    for rule in ("paper", "gyro"):
        q = _quantizer("poincare", curvature=c, residual=rule, levels=3, codebook_size=64, dim=6)
        q = q.double()
        with torch.no_grad():
            for i, b in enumerate(q.codebooks):
                b.copy_(_ball_points(64, 6, c, seed=20 + i, max_radius=0.6, dtype=torch.float64))
        out = q(x)
        # overwrite the chosen last-level codewords with the last residuals (distinct codes only)
        last = out.codes[:, -1]
        keep = torch.tensor([(last == t).sum() == 1 for t in last])
        with torch.no_grad():
            q.codebooks[-1][last[keep]] = out.residuals[-1][keep].detach()
        again = q(x[keep])
        assert torch.equal(again.codes, out.codes[keep])  # still the greedy path
        errors[rule] = dist(again.quantized, x[keep], c).max().item()
    assert errors["gyro"] < 1e-6
    assert errors["paper"] > 1e-3  # Möbius addition is not associative


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_straight_through_gradient_is_identity(geometry):
    q = _quantizer(geometry)
    x = _ball_points(30, 8, 1.0, max_radius=0.8).requires_grad_()
    w = torch.randn(30, 8)
    (q(x).quantized * w).sum().backward()
    torch.testing.assert_close(x.grad, w)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_loss_matches_algorithm_1_and_trains_codebooks(geometry):
    q = _quantizer(geometry, commitment=0.3)
    x = _ball_points(64, 8, 1.0, max_radius=0.8).requires_grad_()
    out = q(x)
    want = sum(
        ((r - q.codebooks[i][out.codes[:, i]]) ** 2).sum(-1).mean() * 1.3
        for i, r in enumerate(out.residuals)
    )
    torch.testing.assert_close(out.loss, want)
    out.loss.backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in q.codebooks)
    assert x.grad.abs().sum() > 0  # commitment reaches the input


def test_hyperbolic_loss_distance_uses_squared_geodesic():
    q = _quantizer("poincare", loss_distance="hyperbolic", commitment=0.0).double()
    x = _ball_points(64, 8, 1.0, dtype=torch.float64)
    out = q(x)
    want = sum(
        (dist(r, q.codebooks[i][out.codes[:, i]], 1.0) ** 2).mean() for i, r in enumerate(out.residuals)
    )
    torch.testing.assert_close(out.loss, want)


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
@pytest.mark.parametrize("loss_distance", ["squared_norm", "hyperbolic"])
@pytest.mark.parametrize("rule", ["paper", "gyro"])
def test_forward_backward_finite_near_boundary(c, loss_distance, rule):
    gaps = torch.tensor([1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7] * 8)
    d = torch.nn.functional.normalize(torch.randn(gaps.numel(), 8), dim=-1)
    x = (d * ((1 - gaps) / c**0.5)[:, None]).requires_grad_()
    q = _quantizer("poincare", curvature=c, residual=rule, loss_distance=loss_distance,
                   kmeans_init=True, dead_code_threshold=0.5)
    with torch.no_grad():  # codewords near the boundary too
        q.codebooks[0].copy_(q.ball.projx(torch.nn.functional.normalize(torch.randn(16, 8), dim=-1) / c**0.5))
    out = q(x)
    (out.loss + out.quantized.sum()).backward()
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss)
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(b.grad).all() for b in q.codebooks)
    assert (c**0.5 * out.quantized.norm(dim=-1) < 1).all()


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_points_outside_the_ball_and_large_norms_are_projected(c):
    x = torch.randn(20, 8) * 1e3
    x.requires_grad_()
    q = _quantizer("poincare", curvature=c)
    out = q(x)
    (out.loss + out.quantized.sum()).backward()
    assert torch.isfinite(out.quantized).all() and torch.isfinite(x.grad).all()
    assert (c**0.5 * out.quantized.norm(dim=-1) < 1).all()


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_same_seed_same_codes(geometry):
    def run():
        torch.manual_seed(123)
        q = _quantizer(geometry, kmeans_init=True, dead_code_threshold=0.5, codebook_size=32)
        opt = riemannian_optimizer(q.parameters(), lr=0.05)
        x = _ball_points(256, 8, 1.0, seed=5)
        for _ in range(5):
            out = q(x)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        return q.encode(x)

    assert torch.equal(run(), run())


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_eval_mode_never_changes_codebooks(geometry):
    q = _quantizer(geometry, kmeans_init=True, dead_code_threshold=1e9)
    before = [b.detach().clone() for b in q.codebooks]
    q.eval()
    q(_ball_points(100, 8, 1.0))
    q.encode(_ball_points(100, 8, 1.0, seed=2))
    assert all(torch.equal(a, b) for a, b in zip(before, q.codebooks))
    assert not bool(q.initialized)
    q.train()
    q(_ball_points(100, 8, 1.0))
    assert bool(q.initialized)
    assert not all(torch.equal(a, b) for a, b in zip(before, q.codebooks))


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_kmeans_init_lowers_quantization_error(geometry):
    # 32 tight clusters on the ball: k-means finds them, a random codebook does not
    centers = _ball_points(32, 8, 1.0, seed=9, max_radius=0.8)
    noise = 0.02 * torch.randn(2048, 8)
    x = poincare_ball(1.0).mobius_add(centers.repeat(64, 1), noise)

    def error(kmeans_init):
        torch.manual_seed(0)
        q = _quantizer(geometry, kmeans_init=kmeans_init, codebook_size=64, levels=2)
        q.train()
        q(x)  # first batch initialises
        y = q.eval()(x).quantized
        if geometry == "euclidean":
            return (y - x).norm(dim=-1).mean()
        return q.ball.dist(y, x).mean()

    assert error(True) < 0.5 * error(False)


def test_kmeans_init_keeps_codewords_in_ball_and_dead_codes_are_replaced():
    torch.manual_seed(1)
    q = _quantizer("poincare", codebook_size=64, dead_code_threshold=1.0, usage_decay=0.0)
    with torch.no_grad():  # park all but 4 codewords far away so they are never chosen
        q.codebooks[0].copy_(q.ball.projx(torch.full((64, 8), 10.0)))
        q.codebooks[0][:4] = _ball_points(4, 8, 1.0, seed=3, max_radius=0.3)
    x = _ball_points(512, 8, 1.0, seed=8, max_radius=0.5)
    used_before = q.eval()(x).codes[:, 0].unique().numel()
    q.train()(x)  # replaces dead codes with residuals of this batch
    used_after = q.eval()(x).codes[:, 0].unique().numel()
    assert used_before <= 4 < used_after
    assert (q.codebooks[0].norm(dim=-1) < 1).all()


@pytest.mark.parametrize("c", [1.0, 4.0])
def test_riemannian_steps_keep_codebooks_in_ball(c):
    q = _quantizer("poincare", curvature=c)
    opt = riemannian_optimizer(q.parameters(), lr=10.0, kind="sgd")
    x = _ball_points(128, 8, c, max_radius=0.99)
    for _ in range(20):
        out = q(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    for b in q.codebooks:
        assert torch.isfinite(b).all() and (c**0.5 * b.norm(dim=-1) < 1).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(levels=0), "levels"),
        (dict(codebook_size=[4, 4]), "codebook_size"),
        (dict(codebook_size=0), "codebook_size"),
        (dict(geometry="lorentz"), "geometry"),
        (dict(geometry="poincare", residual="left"), "residual"),
        (dict(geometry="poincare", curvature=-1.0), "curvature"),
        (dict(geometry="euclidean", loss_distance="hyperbolic"), "hyperbolic"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    geometry = kwargs.pop("geometry", "euclidean")
    with pytest.raises(ValueError, match=match):
        _quantizer(geometry, **kwargs)


def test_bad_input_shapes_raise():
    q = _quantizer("euclidean")
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        q(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        q.decode(torch.zeros(4, 2, dtype=torch.long))


def test_residual_quantizer_is_a_quantizer_base_and_level_sizes_expand():
    q = _quantizer("poincare", codebook_size=[4, 8, 16])
    assert isinstance(q, QuantizerBase) and q.codebook_sizes == [4, 8, 16]
    assert level_sizes(3, 5) == [5, 5, 5] and level_sizes(2, (3, 4)) == [3, 4]
    assert "levels=3, codebook_sizes=[4, 8, 16], dim=8, geometry=poincare" in repr(q)


def test_usage_matrix_and_heatmap_png(tmp_path):
    codes = torch.tensor([[0, 1], [0, 2], [1, 2], [0, 0]])
    share = usage_matrix(codes, [2, 4])
    assert share.shape == (2, 4)
    assert share[0, :2].tolist() == [0.75, 0.25] and all(v != v for v in share[0, 2:])  # NaN pad
    assert share[1].tolist() == [0.25, 0.25, 0.5, 0.0]
    path = usage_heatmap(codes, [2, 4], tmp_path / "plots" / "usage.png", title="toy")
    assert path == tmp_path / "plots" / "usage.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["usage.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="outside"):
        usage_matrix(codes, [2, 2])
