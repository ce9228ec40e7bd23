"""Codebooks that start alive (issue 13): k-means++ seeding, init from the data's residuals level
by level in the quantizer's geometry, dead-code replacement, and the 4,096-item guard."""

import pytest
import torch

from closed_forms import random_ball_points
from hrq.data import make_taxonomy
from hrq.manifold import poincare_ball
from hrq.models import evaluate_vae, init_codebooks, min_kmeans_sample, train_vae
from hrq.quantize import HGRecQuantizer, HyperVQQuantizer, ResidualQuantizer, kmeans
from hrq.quantize.kmeans import _poincare_centroids
from hrq.stages.common import build_method_quantizer, build_vae

# The recommendation tokenizer of config.yaml's protocol (App. C.2) with the options this issue
# adds, as the pipeline passes them to build_vae / train_vae.
PAPER_TOKENIZER = {"hidden_dims": [512, 256, 128], "commitment": 0.25, "kmeans_init": True,
                   "dead_code_threshold": 0.5, "usage_decay": 0.8}
METHODS = {"euclidean": {"kind": "vae", "geometry": "euclidean"},
           "poincare": {"kind": "vae", "geometry": "poincare", "curvature": 1.0, "residual": "paper"}}


@pytest.fixture(scope="module")
def items():
    """The issue's set: 4,096 clustered 64-d items (leaves of a depth-4, branching-8 taxonomy:
    8 top-level clusters nested three levels deep), as benchmarks/codebook_init.py builds it."""
    return make_taxonomy(4, 8, 64, seed=0).vectors


def _ball_points(n, dim, seed=0, max_radius=0.9):
    return random_ball_points(n, dim, 1.0, max_radius, generator=torch.Generator().manual_seed(seed)).float()


# ---------------------------------------------------------------------------------- k-means
@pytest.mark.parametrize("curvature", [None, 1.0])
def test_kmeans_seeds_every_distinct_point_before_repeating(curvature):
    # 3,000 copies of one point and 100 distinct ones, like the zero residuals of points that were
    # centroids one level up: a uniform sample of seeds would land almost only on the copies
    g = torch.Generator().manual_seed(0)
    distinct = _ball_points(100, 8, seed=1, max_radius=0.8)
    x = torch.cat([distinct[:1].repeat(3000, 1), distinct[1:]])
    centroids = kmeans(x, 64, curvature=curvature, generator=g)
    assert centroids.shape == (64, 8) and torch.unique(centroids, dim=0).shape[0] == 64
    if curvature is not None:
        assert (centroids.norm(dim=-1) < 1).all()
    # more centroids than distinct points: the seeds (iters=0) take every distinct point once
    seeds = kmeans(x, 200, iters=0, curvature=curvature, generator=g)
    assert torch.unique(torch.cat([seeds, distinct]), dim=0).shape[0] == 100
    assert torch.unique(seeds, dim=0).shape[0] == 100


def test_poincare_centroids_equal_geoopt_weighted_midpoint():
    ball = poincare_ball(1.0)
    x = _ball_points(300, 6).double()
    assign = torch.randint(12, (300,), generator=torch.Generator().manual_seed(2))
    onehot = torch.zeros(12, 300, dtype=torch.float64)
    onehot[assign, torch.arange(300)] = 1.0
    want = ball.weighted_midpoint(x.unsqueeze(0), onehot, reducedim=[1], dim=-1).reshape(12, 6)
    got = _poincare_centroids(x, assign, torch.zeros(12, 6, dtype=torch.float64), ball)
    torch.testing.assert_close(got, ball.projx(want), atol=1e-12, rtol=1e-10)


def test_kmeans_is_reproducible_with_a_generator():
    x = torch.randn(500, 4)
    a = kmeans(x, 16, generator=torch.Generator().manual_seed(3))
    b = kmeans(x, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- init_from
@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_init_from_fits_each_level_to_the_residuals_of_the_levels_before(geometry):
    c = 1.0 if geometry == "poincare" else None
    q = ResidualQuantizer(3, 16, 8, geometry=geometry, kmeans_init=True)
    x = _ball_points(600, 8, seed=4)
    q.init_from(x, generator=torch.Generator().manual_seed(5))
    assert bool(q.initialized)

    # the same draws, level by level, on the residuals the quantizer itself computes
    g = torch.Generator().manual_seed(5)
    residuals = q.eval()(x).residuals
    for level in range(3):
        want = q.project(kmeans(residuals[level], 16, curvature=c, generator=g))
        torch.testing.assert_close(q.codebooks[level].detach(), want)
    # level 1 clustered real (non-zero, spread) residuals: 16 distinct codewords that are not 0
    assert (residuals[1].norm(dim=-1) > 0).float().mean() > 0.9
    assert torch.unique(q.codebooks[1].detach(), dim=0).shape[0] == 16
    assert (q.codebooks[1].detach().norm(dim=-1) > 1e-4).all()
    if geometry == "poincare":
        assert all((b.detach().norm(dim=-1) < 1).all() for b in q.codebooks)
    # initialised: a training batch no longer re-runs k-means on itself
    before = [b.detach().clone() for b in q.codebooks]
    q.train()(x[:32])
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, q.codebooks))


def test_hgrec_init_from_clusters_exp0_of_tangent_residuals():
    q = HGRecQuantizer(2, 8, 4, kmeans_init=True)
    z = torch.randn(400, 4, generator=torch.Generator().manual_seed(6))
    q.init_from(z, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    residuals = q.eval()(z).residuals
    for level in range(2):
        want = q.ball.logmap0(kmeans(q.ball.expmap0(residuals[level]), 8, curvature=1.0, generator=g))
        torch.testing.assert_close(q.codebooks[level].detach(), want)


def test_hypervq_has_no_kmeans_init():
    q = HyperVQQuantizer(2, 8, 4)
    with pytest.raises(NotImplementedError, match="no data-dependent codebook init"):
        q.init_from(torch.randn(64, 4))


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_data_init_covers_the_codebooks_where_a_first_batch_cannot(items, geometry):
    """Before any step: k-means on all 4,096 latents makes every level use almost all 256 codes;
    on a 128-item batch level 0 has at most 128 distinct codewords (repeats that Lloyd's rounding
    pulls a hair apart may both be hit) and the deeper levels collapse (issue 13)."""
    opts = {**PAPER_TOKENIZER, "hidden_dims": [128], "dead_code_threshold": 0.0}  # a cheaper encoder
    torch.manual_seed(0)
    model = build_vae(64, 32, 3, 256, METHODS[geometry], opts)
    assert init_codebooks(model, items) == 4096
    used = [u * 256 for u in _usage(model, items)]
    assert min(used) >= 0.9 * 256, used

    torch.manual_seed(0)
    lazy = build_vae(64, 32, 3, 256, METHODS[geometry], opts)
    with torch.no_grad():
        lazy.train()(items[:128])  # the quantizer's own first-batch k-means
    used_lazy = [u * 256 for u in _usage(lazy, items)]
    assert used_lazy[0] < used[0] and max(used_lazy[1:]) < 0.5 * min(used[1:]), (used_lazy, used)


def _usage(model, items):
    stats = evaluate_vae(model, items)
    return [stats[f"usage/l{i}"] for i in range(model.quantizer.levels)]


def test_init_sample_is_seeded_and_bounded_below(items):
    torch.manual_seed(0)
    model = build_vae(64, 8, 2, 64, METHODS["euclidean"], {"hidden_dims": [16], "kmeans_init": True})
    assert min_kmeans_sample(model.quantizer.codebook_sizes) == 1024
    with pytest.raises(ValueError, match="at least 1024"):
        init_codebooks(model, items, sample=512)
    assert init_codebooks(model, items, sample=2048, seed=1) == 2048
    first = [b.detach().clone() for b in model.quantizer.codebooks]
    assert init_codebooks(model, items, sample=2048, seed=1) == 2048
    assert all(torch.equal(a, b.detach()) for a, b in zip(first, model.quantizer.codebooks))
    assert init_codebooks(model, items[:100], sample=2048) == 100  # fewer items: all of them
    with pytest.raises(ValueError, match="kmeans_sample"):
        train_vae(model, items, epochs=1, kmeans_sample=-1, progress=False)


def test_train_vae_first_batch_init_stays_available(items):
    """``kmeans_sample=0`` leaves the init to the quantizer's first training batch."""
    torch.manual_seed(0)
    model = build_vae(64, 8, 2, 16, METHODS["euclidean"], {"hidden_dims": [16], "kmeans_init": True})
    train_vae(model, items[:256], epochs=1, batch_size=256, kmeans_sample=0, progress=False)
    assert bool(model.quantizer.initialized)


# ---------------------------------------------------------------------------------- options
def test_tokenizer_wide_options_reach_only_the_kinds_that_take_them():
    defaults = {"commitment": 0.25, "kmeans_init": True, "dead_code_threshold": 0.5, "usage_decay": 0.8}
    rq = build_method_quantizer({"kind": "vae", "geometry": "euclidean"}, 2, 8, 4, defaults)
    assert (rq.kmeans_init, rq.dead_code_threshold, rq.usage_decay) == (True, 0.5, 0.8)
    assert build_method_quantizer({"kind": "vae", "quantizer": "hgrec"}, 2, 8, 4, defaults).kmeans_init
    # HQ-VAE's RSQ has no k-means init: only its own options turn it on
    assert not build_method_quantizer({"kind": "vae", "quantizer": "rsq"}, 2, 8, 4, defaults).kmeans_init
    rsq = build_method_quantizer({"kind": "vae", "quantizer": "rsq", "options": {"kmeans_init": True}},
                                 2, 8, 4, defaults)
    assert rsq.kmeans_init


def test_dead_codes_move_onto_distinct_residuals_of_the_batch():
    q = ResidualQuantizer(1, 64, 4, dead_code_threshold=0.5, usage_decay=0.0)
    with torch.no_grad():  # every point's nearest codeword is codeword 0; 63 are dead
        q.codebooks[0].copy_(torch.full((64, 4), 50.0))
        q.codebooks[0][0] = 0.0
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(8))
    q.train()(x)
    book = q.codebooks[0].detach()
    moved = (book != 50.0).any(-1).nonzero().squeeze(-1)
    assert moved.numel() == 11  # codeword 0 and one per point: no two on the same residual
    assert torch.unique(book[moved[1:]], dim=0).shape[0] == 10
    assert all(any(torch.equal(row, p) for p in x) for row in book[moved[1:]])


def test_dead_code_threshold_is_a_share_of_the_uniform_usage():
    # 4 codewords, 100 points split 70/20/10/0: the uniform share is 25 per codeword; a threshold
    # of 0.5 marks codewords under 12.5 points dead (10 and 0), whatever the batch size
    q = ResidualQuantizer(1, 4, 1, dead_code_threshold=0.5, usage_decay=0.0)
    with torch.no_grad():
        q.codebooks[0].copy_(torch.tensor([[0.0], [10.0], [20.0], [1000.0]]))
    x = torch.cat([torch.zeros(70), torch.full((20,), 10.0), torch.full((10,), 20.0)]).unsqueeze(-1)
    q.train()(x)
    book = q.codebooks[0].detach().squeeze(-1)
    assert book[0] == 0.0 and book[1] == 10.0
    assert book[3] != 1000.0  # dead, moved onto a point
    with pytest.raises(ValueError, match="usage_decay"):
        ResidualQuantizer(1, 4, 1, usage_decay=1.0)


# ---------------------------------------------------------------------------------- the guard
@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_every_level_uses_most_codes_after_one_epoch(items, geometry):
    """The issue's must-show: 4,096 clustered items, k=3, s=256, one epoch of the pipeline's own
    build_vae + train_vae with its tokenizer options (k-means on all items' latents, dead codes
    at 0.5 of a uniform share, decay 0.8), at the protocol's lr 1e-5.

    Measured (benchmarks/codebook_init.py, model seeds 0-2): at least 213/256 codes at every level
    (Euclidean) and 237/256 (Poincaré); the first-batch init without replacement keeps 85 / 4 / 4
    and 132 / 6 / 6 codes. The bound 60% (154 codes) leaves ~60 codes of margin below the worst
    seed and sits far above every collapsed level. (At lr 1e-3 the encoder's latents spread ~50x in this
    epoch, faster than any codeword follows, and level 0 is at 25-45% after one epoch, >95% by
    epoch 10: see README, "Codebook initialisation".)
    """
    torch.manual_seed(0)
    model = build_vae(64, 32, 3, 256, METHODS[geometry], PAPER_TOKENIZER)
    train_vae(model, items, epochs=1, batch_size=128, lr=1e-5, seed=0, progress=False)
    used = [round(u * 256) for u in _usage(model, items)]
    assert min(used) >= 0.6 * 256, used
