"""Hyperbolic layers in a network, (H)RQ-VAE training and its Table-4 norms."""

import pytest
import torch

from hrq.models import ResidualQuantizedVAE, train_vae
from hrq.models.training import collision_summary
from hrq.quantize import ResidualQuantizer


def _clustered_data(n=384, d=32, clusters=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(clusters, d, generator=g), dim=-1)
    x = centers[torch.randint(clusters, (n,), generator=g)] + 0.1 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(x, dim=-1)  # like normalised MPNet vectors


def _vae(geometry, **kw):
    return ResidualQuantizedVAE(32, 8, (32, 16), levels=2, codebook_size=16, geometry=geometry,
                                kmeans_init=True, **kw)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_vae_lowers_reconstruction_loss(geometry):
    x = _clustered_data()
    model = _vae(geometry)
    epochs = []
    history = train_vae(model, x, epochs=25, batch_size=64, lr=3e-3, progress=False,
                        on_epoch=lambda e, m: epochs.append(e))
    assert epochs == list(range(25))
    first, last = history[0]["eval/reconstruction_loss"], history[-1]["eval/reconstruction_loss"]
    assert last < 0.7 * first
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_vae_api_shapes_and_consistency(geometry):
    x = _clustered_data(n=64)
    model = _vae(geometry, residual="gyro") if geometry == "poincare" else _vae(geometry)
    out = model(x)
    assert out.reconstruction.shape == x.shape and out.codes.shape == (64, 2)
    assert out.latent.shape == (64, 8)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.quantizer_loss)
    model.eval()
    codes = model.encode(x)
    torch.testing.assert_close(model.decode(codes), model(x).reconstruction, atol=1e-5, rtol=1e-4)
    norms = model.latent_norms(x)
    assert norms.shape == (64,) and (norms > 0).all()
    if geometry == "poincare":
        assert (out.latent.norm(dim=-1) < 1).all()
        want = model.ball.logmap0(model.to_latent(x)).norm(dim=-1)
    else:
        want = model.to_latent(x).norm(dim=-1)
    torch.testing.assert_close(norms, want)


def test_hrq_vae_parameters_split_into_manifold_and_euclidean():
    import geoopt

    model = _vae("poincare")
    manifold = [p for p in model.parameters() if isinstance(p, geoopt.ManifoldParameter)
                and isinstance(p.manifold, geoopt.PoincareBall)]
    # dims 32 -> 32 -> 16 -> 8: 3 + 3 Möbius-linear biases, and 2 codebooks, live on the ball
    assert len(manifold) == 8


@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_hrq_vae_finite_for_large_inputs(scale):
    model = _vae("poincare")
    x = _clustered_data(n=32) * scale
    out = model(x)
    out.loss.backward()
    assert torch.isfinite(out.reconstruction).all() and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_default_vae_builds_the_residual_quantizer_from_its_arguments():
    model = ResidualQuantizedVAE(32, 8, (16,), levels=2, codebook_size=[4, 8], geometry="poincare",
                                 curvature=0.5, residual="gyro", commitment=0.1, kmeans_init=True)
    q = model.quantizer
    assert type(q) is ResidualQuantizer and q.codebook_sizes == [4, 8] and q.dim == 8
    assert (q.geometry, q.curvature, q.residual, q.commitment, q.kmeans_init) == (
        "poincare", 0.5, "gyro", 0.1, True)
    assert model.reconstruction == "mse" and model.curvature == 0.5
    default = ResidualQuantizedVAE(32).quantizer
    assert (default.levels, default.codebook_sizes, default.dim, default.geometry) == (
        3, [256] * 3, 32, "euclidean")
    assert (default.residual, default.commitment) == ("paper", 0.25)


def test_history_has_epoch_seconds_and_whole_multitoken_collision_rate():
    x = _clustered_data(n=64)
    model = ResidualQuantizedVAE(32, 8, (16,), levels=2, codebook_size=4)  # 16 multitokens < 64
    history = train_vae(model, x, epochs=2, batch_size=32, progress=False)
    assert len(history) == 2
    assert all(h["train/epoch_seconds"] > 0 and "train/temperature" not in h for h in history)
    unique = torch.unique(model.encode(x), dim=0).shape[0]
    assert history[-1]["eval/collision_rate"] == pytest.approx(1 - unique / 64)
    assert history[-1]["eval/collision_rate"] >= 1 - 16 / 64


def test_collision_summary_by_hand():
    history = [{"eval/collision_rate": r} for r in (0.5, 0.2, 0.3, 0.2, float("nan"))]
    assert collision_summary(history) == {
        "min_collision_rate": 0.2, "best_collision_epoch": 1, "epochs_to_min_collision": 2}
    assert collision_summary([{"x": 0.1}, {"x": 0.0}], key="x")["epochs_to_min_collision"] == 2
    with pytest.raises(ValueError, match="collision_rate"):
        collision_summary([{"train/loss": 1.0}])
    with pytest.raises(ValueError, match="collision_rate"):
        collision_summary([])
