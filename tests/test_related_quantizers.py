"""HG-Rec, HyperVQ (and HRQ x HyperVQ) and RSQ-VAE quantizers: API, paper formulas, numerics,
training."""

import math

import geoopt
import pytest
import torch

from closed_forms import dist, expmap0, mobius_add, random_ball_points
from hrq.manifold import poincare_ball
from hrq.models import ResidualQuantizedVAE, riemannian_optimizer, train_vae
from hrq.quantize import (
    QUANTIZER_KINDS,
    AnnealedQuantizer,
    HGRecQuantizer,
    HyperVQQuantizer,
    QuantizerBase,
    ResidualQuantizer,
    RSQQuantizer,
    build_quantizer,
    pyramid_codebook_sizes,
    quantizer_option_names,
    unidirectional_mlr,
)

SIZES = [4, 8, 16]
KINDS = ["hgrec", "hypervq", "hypervq_poincare", "rsq"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads cost more than they save, and on an
    oversubscribed machine every parallel op can wait a scheduler slice (measured 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _make(kind, levels=3, sizes=SIZES, dim=8, **kw):
    if kind == "hgrec":
        return HGRecQuantizer(levels, sizes, dim, **kw)
    if kind == "hypervq":
        return HyperVQQuantizer(levels, sizes, dim, **kw)
    if kind == "hypervq_poincare":
        return HyperVQQuantizer(levels, sizes, dim, geometry="poincare", **kw)
    return RSQQuantizer(levels, sizes, dim, **kw)


def _inputs(kind, n=64, dim=8, seed=0, dtype=torch.float32):
    """Ball points for the Poincaré quantizer, tangent vectors of a similar spread otherwise."""
    g = torch.Generator().manual_seed(seed)
    x = random_ball_points(n, dim, 1.0, 0.9, generator=g)
    return (x if kind == "hypervq_poincare" else 2 * x).to(dtype)


def _clusters(kind, n=256, dim=8, clusters=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=g, dtype=torch.float64)
    noise = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x = (centers[torch.randint(clusters, (n,), generator=g)] + 0.1 * noise).float()
    return poincare_ball(1.0).expmap0(0.5 * x) if kind == "hypervq_poincare" else x


# ---------------------------------------------------------------------------------- API
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_code_ranges_with_differential_codebooks(kind):
    q = _make(kind)
    assert q.levels == 3 and q.codebook_sizes == SIZES and q.geometry in ("euclidean", "poincare")
    x = _inputs(kind)
    for mode in (True, False):
        out = q.train(mode)(x)
        assert out.codes.shape == (64, 3) and out.codes.dtype == torch.long
        assert out.quantized.shape == (64, 8) and out.loss.ndim == 0
        assert len(out.residuals) == 3 and all(r.shape == (64, 8) for r in out.residuals)
        for i, size in enumerate(SIZES):
            assert 0 <= out.codes[:, i].min() and out.codes[:, i].max() < size
    stats = q.code_stats(out.codes)
    assert len(stats.usage) == 3 and all(1 <= p <= s for p, s in zip(stats.perplexity, SIZES))
    if kind == "hypervq_poincare":
        assert (out.quantized.norm(dim=-1) < 1).all()
        far = q.project(torch.full((2, 8), 10.0))
        torch.testing.assert_close(far.norm(dim=-1), torch.full((2,), 1 - 4e-3))


@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_match_eval_forward_and_training_values(kind):
    q = _make(kind)
    x = _inputs(kind)
    q.eval()
    out = q(x)
    assert torch.equal(q.encode(x), out.codes)
    torch.testing.assert_close(q.decode(out.codes), out.quantized, atol=1e-6, rtol=1e-5)
    q.train()
    assert torch.equal(q.encode(x), out.codes) and q.training  # encode is an eval pass
    train_out = q(x)
    if kind != "rsq":  # hard choices: the training value is the decoded codes (straight-through)
        torch.testing.assert_close(q.decode(train_out.codes), train_out.quantized, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_eval_codes_are_deterministic_and_do_not_use_the_rng(kind):
    q = _make(kind).eval()
    x = _inputs(kind)
    torch.manual_seed(1)
    a = q(x)
    torch.manual_seed(2)
    b = q(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
    if kind != "hgrec":
        assert q.temperature_schedule.step == 0  # eval passes do not anneal


@pytest.mark.parametrize("kind", ["hypervq", "rsq"])
def test_training_codes_are_stochastic(kind):
    q = _make(kind, sizes=16, init_scale=1e-3).train()  # near-uniform logits: sampling decides
    x = _inputs(kind, n=256)
    torch.manual_seed(1)
    a = q(x).codes
    torch.manual_seed(2)
    assert not torch.equal(a, q(x).codes)


def test_pyramid_codebook_sizes_follow_eq_12():
    assert pyramid_codebook_sizes(64, 3) == [64, 128, 256]
    assert pyramid_codebook_sizes(16, 4, growth=2.0) == [16, 32, 64, 128]
    q = HGRecQuantizer(3, pyramid_codebook_sizes(16, 3), 8)
    assert [b.shape[0] for b in q.codebooks] == [16, 32, 64]


# ---------------------------------------------------------------------------------- annealing
@pytest.mark.parametrize("step", [0, 1, 1000, 100_000, 277_258, 1_000_000, 10_000_000])
def test_hypervq_temperature_schedule(step):
    q = HyperVQQuantizer(2, 8, 4, max_temperature=2.0, min_temperature=0.5, temperature_decay=0.999995)
    q.set_step(step)
    assert q.temperature == pytest.approx(max(2.0 * 0.999995**step, 0.5), rel=1e-12)


@pytest.mark.parametrize("step", [0, 1, 1000, 100_000, 1_000_000])
@pytest.mark.parametrize("c_tau", [0.0, 0.5])
def test_rsq_temperature_schedule(step, c_tau):
    q = RSQQuantizer(2, 8, 4, temperature_decay=1e-5, min_temperature=c_tau)
    q.set_step(step)
    assert q.temperature == pytest.approx(max(c_tau, math.exp(-1e-5 * step)), rel=1e-12)


@pytest.mark.parametrize("kind", ["hypervq", "rsq"])
def test_training_passes_advance_the_step_and_state_dict_keeps_it(kind):
    q = _make(kind)
    x = _inputs(kind)
    q.train()
    for _ in range(3):
        q(x)
    q.eval()(x)
    q.encode(x)
    assert q.temperature_schedule.step == 3
    q.set_step(12345)
    fresh = _make(kind)
    fresh.load_state_dict(q.state_dict())
    assert fresh.temperature_schedule.step == 12345 and fresh.temperature == q.temperature


# ---------------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_mlr_logits_match_ganea_hyperplane_distance_and_hnnpp_formula(c):
    g = torch.Generator().manual_seed(3)
    x = random_ball_points(50, 6, c, 0.99, generator=g)
    a = torch.randn(12, 6, generator=g, dtype=torch.float64) * 2
    r = torch.randn(12, generator=g, dtype=torch.float64) * 0.8 / c**0.5
    got = unidirectional_mlr(x, a, r, c)

    # (1) Ganea et al.: λ_q ||a'|| × signed distance to the hyperplane through q = exp0(r [a])
    # orthogonal to a' = P_{0->q}(a) = (1 - c||q||^2) a, by geoopt's dist2plane.
    ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))
    q = expmap0(r[:, None] * a / a.norm(dim=-1, keepdim=True), c)
    a_q = (1 - c * q.pow(2).sum(-1, keepdim=True)) * a
    lam_q = 2 / (1 - c * q.pow(2).sum(-1))
    d = ball.dist2plane(x[:, None], q[None], a_q[None], signed=True)
    torch.testing.assert_close(got, lam_q * a_q.norm(dim=-1) * d, rtol=1e-9, atol=1e-9)

    # (2) the HNN++ closed form with λ_c(x) = 2 / (1 - c||x||^2), element by element
    lam_x = 2 / (1 - c * x.pow(2).sum(-1))
    want = torch.empty(50, 12, dtype=torch.float64)
    for n in range(50):
        for k in range(12):
            unit = a[k] / a[k].norm()
            s = 2 * c**0.5 * r[k]
            inner = lam_x[n] * (c**0.5 * x[n] @ unit) * torch.cosh(s) - (lam_x[n] - 1) * torch.sinh(s)
            want[n, k] = 2 * a[k].norm() / c**0.5 * torch.asinh(inner)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_hypervq_levels_use_their_geometry_residual_and_codewords(geometry):
    c = 0.5
    q = HyperVQQuantizer(3, [5, 6, 7], 4, geometry=geometry, curvature=c).double().eval()
    x = random_ball_points(40, 4, c, 0.9, generator=torch.Generator().manual_seed(4))
    out = q(x)
    r = x
    words = []
    for level, (a, rad) in enumerate(zip(q.normals, q.radii)):
        a, rad = a.detach(), rad.detach()
        tangent = rad[:, None] * a / a.norm(dim=-1, keepdim=True)  # eq. 15: r_k [a_k]
        book = expmap0(tangent, c) if geometry == "poincare" else tangent  # eq. 4 on the ball
        point = r if geometry == "poincare" else expmap0(r, c)
        idx = unidirectional_mlr(point, a, rad, c).argmax(-1)
        assert torch.equal(out.codes[:, level], idx)
        e = book[idx]
        words.append(e)
        r = mobius_add(r, -e, c) if geometry == "poincare" else r - e
    if geometry == "poincare":  # HRQ's left fold ((q_1 ⊕ q_2) ⊕ q_3)
        want = mobius_add(mobius_add(words[0], words[1], c), words[2], c)
    else:
        want = sum(words)
    torch.testing.assert_close(out.quantized, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_hgrec_codes_are_the_brute_force_argmin_of_geoopt_dist(c):
    q = HGRecQuantizer(3, [16, 24, 32], 8, curvature=c, commitment=0.3).double()
    with torch.no_grad():
        for b in q.codebooks:
            b.mul_(8 / c**0.5)  # spread codewords over the ball
    g = torch.Generator().manual_seed(5)
    z = torch.randn(200, 8, generator=g, dtype=torch.float64) * 1.5 / c**0.5
    out = q(z)
    ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))
    r, loss, total = z, 0.0, 0.0
    for level, book in enumerate(q.codebooks):
        book = book.detach()
        d = ball.dist(ball.expmap0(r)[:, None], ball.expmap0(book)[None])  # eq. 5-6, [N, K]
        idx = d.argmin(1)
        assert torch.equal(out.codes[:, level], idx)
        loss = loss + 1.3 * (d[torch.arange(200), idx] ** 2).mean()  # eq. 8: (1 + β) d^2 in value
        total = total + book[idx]
        r = r - book[idx]  # eq. 7
    torch.testing.assert_close(out.loss, loss)
    torch.testing.assert_close(out.quantized, total)


def test_hgrec_gradients_follow_eq_8_stop_gradients():
    q = HGRecQuantizer(2, 8, 4, commitment=0.0)
    z = torch.randn(32, 4, requires_grad=True)
    q(z).loss.backward()  # β = 0: only the codebook term, which is sg[r] -> no gradient to z
    assert z.grad is None or (z.grad == 0).all()
    assert all(b.grad.abs().sum() > 0 for b in q.codebooks)
    q = HGRecQuantizer(2, 8, 4, commitment=0.5)
    z = torch.randn(32, 4, requires_grad=True)
    w = torch.randn(32, 4)
    out = q(z)
    (out.quantized * w).sum().backward()  # straight-through: dẑ/dz = I
    torch.testing.assert_close(z.grad, w)


def test_rsq_loss_is_its_part_of_eq_14_and_eval_codes_are_greedy_rq():
    q = RSQQuantizer(3, [6, 7, 8], 5, init_variance=0.3, init_scale=0.5).double()
    with torch.no_grad():
        q.log_variance.copy_(torch.tensor([0.1, -0.4, -1.0], dtype=torch.float64))
    z = torch.randn(60, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = q.eval()(z)
    s2 = q.variance.detach()
    r, entropy = z, torch.zeros(60, dtype=torch.float64)
    for level, book in enumerate(q.codebooks):
        book = book.detach()
        logits = -((r[:, None] - book[None]) ** 2).sum(-1) / (2 * s2[level])  # eq. 2, full
        p = logits.softmax(-1)
        entropy -= (p * p.log()).sum(-1)
        r = r - book[logits.argmax(-1)]
    want = (r.pow(2).sum(-1) / (2 * s2.sum()) - entropy).mean()
    torch.testing.assert_close(out.loss, want)
    rq = ResidualQuantizer(3, [6, 7, 8], 5).double()
    with torch.no_grad():
        for a, b in zip(rq.codebooks, q.codebooks):
            a.copy_(b)
    assert torch.equal(out.codes, rq(z).codes)


def test_rsq_gradients_reach_everything_without_stop_gradient():
    q = RSQQuantizer(2, 8, 4)
    z = torch.randn(32, 4, requires_grad=True)
    out = q(z)
    (out.loss + out.quantized.pow(2).sum()).backward()
    assert z.grad.abs().sum() > 0 and q.log_variance.grad.abs().sum() > 0
    assert all(b.grad.abs().sum() > 0 for b in q.codebooks)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_hypervq_gradients_reach_normals_radii_and_input_through_the_logits(geometry):
    q = HyperVQQuantizer(2, 8, 4, geometry=geometry)
    x = (0.5 * torch.nn.functional.normalize(torch.randn(32, 4), dim=-1)).requires_grad_()
    out = q(x)
    (out.quantized * torch.randn(32, 4)).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in [*q.normals, *q.radii])


# ---------------------------------------------------------------------------------- numerics
def _assert_finite_backward(q, x):
    out = q(x)
    (out.loss + (out.quantized * torch.randn_like(out.quantized)).sum()).backward()
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss)
    if x.grad is not None or q.training:  # an eval HyperVQ pass has no gradient path to x
        assert torch.isfinite(x.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in q.parameters())


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
@pytest.mark.parametrize("training", [True, False])
def test_hypervq_poincare_finite_near_the_boundary(c, training):
    d = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    for radius in (1 - 1e-6, 1.0, 10.0, 1e4):  # projected to geoopt's radius (1 - 4e-3)/√c
        x = (d * radius / c**0.5).requires_grad_()
        q = _make("hypervq_poincare", curvature=c).train(training)
        with torch.no_grad():
            q.radii[0].mul_(30)  # hyperplane points near the boundary too
            q.radii[1].mul_(1e4)  # and hyperplanes far beyond it
        _assert_finite_backward(q, x)


@pytest.mark.parametrize("kind", ["hgrec", "hypervq", "rsq"])
@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_tangent_quantizers_finite_for_large_norm_inputs(kind, c):
    kw = {"kmeans_init": True} if kind == "rsq" else {"curvature": c}
    if kind == "hgrec":
        kw["kmeans_init"] = True
    d = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    # artanh(1 - 1e-6)/√c: exp0 lands at norm 1 - 1e-6 before projection
    for norm in (math.atanh(1 - 1e-6) / c**0.5, 1e2, 1e4):
        x = (d * norm).requires_grad_()
        _assert_finite_backward(_make(kind, **kw), x)


# ---------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kind", KINDS)
def test_short_training_reduces_loss_and_quantization_error(kind):
    torch.manual_seed(0)
    x = _clusters(kind)
    fast_anneal = {"temperature_decay": 0.99} if "hypervq" in kind else {}
    q = _make(kind, levels=2, sizes=[8, 16], **fast_anneal)
    opt = riemannian_optimizer(q.parameters(), lr=0.02)

    def error():
        with torch.no_grad():
            return (q.eval()(x).quantized - x).pow(2).sum(-1).mean().item()

    before, losses = error(), []
    q.train()
    for _ in range(150):
        out = q(x)
        # the VAE's reconstruction term with an identity decoder, plus the quantizer's own loss
        loss = (out.quantized - x).pow(2).sum(-1).mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) < sum(losses[:20])
    assert error() < 0.5 * before


# ---------------------------------------------------------------------------------- factory
_FACTORY = {  # kind -> (class, geometry)
    "rq": (ResidualQuantizer, "euclidean"),
    "hrq": (ResidualQuantizer, "poincare"),
    "hgrec": (HGRecQuantizer, "euclidean"),
    "hypervq": (HyperVQQuantizer, "euclidean"),
    "hypervq_hrq": (HyperVQQuantizer, "poincare"),
    "rsq": (RSQQuantizer, "euclidean"),
}


def test_factory_knows_exactly_the_documented_kinds():
    assert set(QUANTIZER_KINDS) == set(_FACTORY)


@pytest.mark.parametrize("kind", list(_FACTORY))
def test_factory_builds_each_kind_with_shapes_and_differential_sizes(kind):
    cls, geometry = _FACTORY[kind]
    q = build_quantizer(kind, 3, SIZES, 8)
    assert type(q) is cls and isinstance(q, QuantizerBase) and q.geometry == geometry
    assert q.levels == 3 and q.codebook_sizes == SIZES and q.dim == 8
    assert isinstance(q, AnnealedQuantizer) == (kind in ("hypervq", "hypervq_hrq", "rsq"))
    x = _inputs("hypervq_poincare" if geometry == "poincare" else kind, n=16)
    out = q(x)
    assert out.codes.shape == (16, 3) and out.quantized.shape == (16, 8) and out.loss.ndim == 0
    assert all(out.codes[:, i].max() < size for i, size in enumerate(SIZES))
    assert build_quantizer(kind, None, SIZES, 8).codebook_sizes == SIZES  # levels from the list


def test_factory_passes_options_and_accepts_the_fixed_geometry():
    q = build_quantizer("hrq", 2, 4, 3, curvature=0.5, residual="gyro", commitment=0.1,
                        geometry="poincare")
    assert (q.curvature, q.residual, q.commitment) == (0.5, "gyro", 0.1)
    assert build_quantizer("hypervq", 2, 4, 3, temperature_decay=0.9).temperature_schedule.rate == \
        pytest.approx(-math.log(0.9))
    assert build_quantizer("rsq", 2, 4, 3, kmeans_init=True).kmeans_init
    assert "curvature" not in quantizer_option_names("rq")
    assert "temperature_decay" in quantizer_option_names("hypervq_hrq")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_quantizer("vqvae", 2, 4, 3),
         r"unknown quantizer kind 'vqvae'; known kinds: 'rq', 'hrq', 'hgrec', 'hypervq', "
         r"'hypervq_hrq', 'rsq'"),
        (lambda: quantizer_option_names("lorentz"), "known kinds"),
        (lambda: build_quantizer("hgrec", 2, 4, 3, temperature_decay=0.9),
         r"'hgrec' does not accept option\(s\) 'temperature_decay'; it accepts: commitment, "
         r"curvature, init_scale, kmeans_init, kmeans_iters"),
        (lambda: build_quantizer("rq", 2, 4, 3, curvature=1.0, residual="gyro"),
         r"'rq' does not accept option\(s\) 'curvature', 'residual'"),
        (lambda: build_quantizer("rq", 2, 4, 3, geometry="poincare"),
         r"'rq' fixes geometry='euclidean'.*use kind 'hrq'"),
        (lambda: build_quantizer("hypervq_hrq", 2, 4, 3, geometry="euclidean"), "use kind 'hypervq'"),
        (lambda: build_quantizer("rsq", None, 4, 3), "levels=None"),
        (lambda: build_quantizer("hgrec", 2, [4, 8, 16], 3), "codebook_size"),
    ],
)
def test_factory_errors_name_the_choices(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------- VAE
@pytest.mark.parametrize("kind", list(_FACTORY))
def test_vae_with_each_quantizer_kind_trains_and_codes_in_range(kind):
    sizes = [4, 8]
    q = build_quantizer(kind, 2, sizes, 8)
    model = ResidualQuantizedVAE(16, 8, (16,), quantizer=q)  # geometry taken from the quantizer
    assert model.quantizer is q and model.geometry == _FACTORY[kind][1]
    assert (model.ball is not None) == (model.geometry == "poincare")
    x = torch.nn.functional.normalize(torch.randn(96, 16), dim=-1)
    history = train_vae(model, x, epochs=2, batch_size=32, lr=1e-3, progress=False)
    assert all(math.isfinite(v) for h in history for v in h.values())
    assert all(h["train/epoch_seconds"] > 0 and 0 <= h["eval/collision_rate"] < 1 for h in history)
    if isinstance(q, AnnealedQuantizer):  # one annealing step per optimizer step, not two
        assert q.step == 2 * 3
        assert history[-1]["train/temperature"] == pytest.approx(q.temperature)
    else:
        assert "train/temperature" not in history[0]
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (96, 2) and codes.dtype == torch.long
    assert all(0 <= codes[:, i].min() and codes[:, i].max() < s for i, s in enumerate(sizes))
    torch.testing.assert_close(model.decode(codes), model(x).reconstruction, atol=1e-5, rtol=1e-4)


def test_train_vae_sets_the_step_of_a_quantizer_that_does_not_count_itself():
    class Frozen(HyperVQQuantizer):
        def _advance_step(self):  # a schedule driven from outside
            pass

    model = ResidualQuantizedVAE(16, 8, (16,), quantizer=Frozen(2, 4, 8))
    train_vae(model, torch.randn(40, 16), epochs=2, batch_size=16, progress=False)
    assert model.quantizer.step == 2 * 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="hypervq_hrq", geometry="euclidean"),
         r"geometry mismatch: quantizer HyperVQQuantizer has geometry='poincare' .*Poincaré ball"),
        (dict(kind="hrq", geometry="euclidean"), "hyperbolic encoder/decoder"),
        (dict(kind="hgrec", geometry="poincare"), r"geometry='euclidean'.*Euclidean encoder/decoder"),
        (dict(kind="rsq", geometry="poincare"), "geometry mismatch"),
        (dict(kind="rq", latent_dim=6), "dim=8 but latent_dim=6"),
        (dict(kind="rq", levels=3), "levels=3"),
        (dict(kind="rq", codebook_size=[4, 4]), "codebook_sizes=\\[4, 8\\]"),
        (dict(kind="hgrec", commitment=0.5), "commitment"),
        (dict(kind="hrq", kmeans_init=True), "kmeans_init"),
        (dict(kind="hgrec", curvature=0.5), "curvature=0.5 but"),
        (dict(kind="rq", reconstruction="cosine"), "reconstruction"),
    ],
)
def test_vae_rejects_incompatible_quantizers(kwargs, match):
    q = build_quantizer(kwargs.pop("kind"), 2, [4, 8], 8)
    latent_dim = kwargs.pop("latent_dim", 8)
    with pytest.raises(ValueError, match=match):
        ResidualQuantizedVAE(16, latent_dim, (16,), quantizer=q, **kwargs)


def test_vae_accepts_matching_explicit_arguments_and_takes_the_quantizer_curvature():
    q = build_quantizer("hrq", 2, [4, 8], 8, curvature=0.5)
    model = ResidualQuantizedVAE(16, 8, (16,), levels=2, codebook_size=[4, 8], geometry="poincare",
                                 quantizer=q)
    assert model.curvature == 0.5 and model.ball.c.item() == pytest.approx(0.5)
    with pytest.raises(TypeError, match="QuantizerBase"):
        ResidualQuantizedVAE(16, 8, (16,), quantizer=torch.nn.Linear(8, 8))


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_hyperbolic_reconstruction_is_squared_ball_distance_of_exp0(c):
    q = build_quantizer("hgrec", 2, [4, 8], 8, curvature=c)
    model = ResidualQuantizedVAE(16, 8, (16,), quantizer=q, reconstruction="hyperbolic").double()
    g = torch.Generator().manual_seed(0)
    x = 0.3 * torch.randn(5, 16, generator=g, dtype=torch.float64)
    y = 0.3 * torch.randn(5, 16, generator=g, dtype=torch.float64)
    want = dist(expmap0(x, c), expmap0(y, c), c).pow(2)
    torch.testing.assert_close(model.reconstruction_error(x, y), want)
    out = model(x)
    torch.testing.assert_close(out.reconstruction_loss,
                               model.reconstruction_error(x, out.reconstruction).mean())


def test_gaussian_reconstruction_is_eq14_decoder_term_at_the_ml_variance():
    from hrq.models import evaluate_vae

    model = ResidualQuantizedVAE(16, 8, (16,), quantizer=build_quantizer("rsq", 2, [4, 8], 8),
                                 reconstruction="gaussian").double()
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model.eval()
    out = model(x)
    err = (x - out.reconstruction).pow(2).sum(-1).detach()
    # D/2 log σ² + Σ_n ||x_n - x̂_n||² / (2σ² N) at σ² = mean ||x - x̂||² / D, less the constant D/2 (1 - log D)
    sigma2 = err.mean() / 16
    full = 16 / 2 * sigma2.log() + err.mean() / (2 * sigma2)
    torch.testing.assert_close(out.reconstruction_loss.detach(), full - 16 / 2 * (1 - torch.log(torch.tensor(16.0, dtype=torch.float64))))
    # ... and no other σ² gives a smaller value of that term
    for other in (0.5 * sigma2, 2 * sigma2):
        assert 16 / 2 * other.log() + err.mean() / (2 * other) > full
    # the reported error is the per-point squared error, comparable with an MSE-trained VAE
    assert evaluate_vae(model, x)["reconstruction_loss"] == pytest.approx(float(err.mean()))
    # its gradient scales as 1 / error: the "self-annealing" pull grows as the fit improves
    model.train()
    y = torch.zeros(4, 16, dtype=torch.float64, requires_grad=True)
    (16 / 2 * (x[:4] - y).pow(2).sum(-1).mean().log()).backward()
    torch.testing.assert_close(y.grad, -16 * (x[:4] - y.detach()) / (x[:4] - y.detach()).pow(2).sum(-1).mean() / 4)


@pytest.mark.parametrize("kind", ["hgrec", "hrq"])
@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_hyperbolic_reconstruction_finite_near_the_boundary(kind, scale):
    model = ResidualQuantizedVAE(16, 8, (16,), quantizer=build_quantizer(kind, 2, [4, 8], 8),
                                 reconstruction="hyperbolic")
    x = torch.nn.functional.normalize(torch.randn(32, 16), dim=-1) * scale
    out = model(x)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.reconstruction_loss > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # identical input and output at the boundary: distance 0 with a finite (zero) gradient
    z = (x[:4] * 0 + x[0]).requires_grad_()
    err = model.reconstruction_error(z, z.detach().clone())
    err.sum().backward()
    assert torch.isfinite(err).all() and torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: HGRecQuantizer(0, 4, 4), "levels"),
        (lambda: HGRecQuantizer(2, [4], 4), "codebook_size"),
        (lambda: HGRecQuantizer(2, 4, 4, curvature=0.0), "curvature"),
        (lambda: HyperVQQuantizer(2, 4, 4, geometry="lorentz"), "geometry"),
        (lambda: HyperVQQuantizer(2, 4, 4, temperature_decay=1.5), "temperature_decay"),
        (lambda: HyperVQQuantizer(2, 4, 4, max_temperature=0.0), "start"),
        (lambda: RSQQuantizer(2, [4, 0], 4), "codebook_size"),
        (lambda: RSQQuantizer(2, 4, 4, init_variance=0.0), "init_variance"),
        (lambda: RSQQuantizer(2, 4, 4).set_step(-1), "step"),
        (lambda: pyramid_codebook_sizes(0, 3), "first"),
    ],
)
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("kind", KINDS)
def test_bad_shapes_raise(kind):
    q = _make(kind)
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        q(torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        q.decode(torch.zeros(4, 2, dtype=torch.long))
