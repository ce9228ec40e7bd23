"""Hyperbolic layers in a network, (H)RQ-VAE training and its Table-4 norms."""

import pytest
import torch

from hrq.models import ResidualQuantizedVAE, train_vae


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
