"""Stacked VAE training (issue 16): R (H)RQ-VAE runs in one process give what R single runs give."""

from __future__ import annotations

import copy

import pytest
import torch

from hrq.checks import NonFiniteError
from hrq.models import ResidualQuantizedVAE, VAEStack, riemannian_optimizer, train_vae, train_vaes
from hrq.quantize.stacked import MemberQuantizers
from hrq.quantize import build_quantizer
from hrq.quantize.stacked import StackedResidualQuantizer

OPTIONS = dict(epochs=3, batch_size=16, lr=3e-3, progress=False)


def _data() -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(96, 16, generator=torch.Generator().manual_seed(5)), dim=-1)


def _model(seed: int, geometry: str = "euclidean", quantizer: str | None = None, kmeans_init: bool = True,
           **options) -> ResidualQuantizedVAE:
    """What the stage builds for one seed: everything random drawn after seeding with it."""
    torch.manual_seed(seed)
    if quantizer is not None:
        return ResidualQuantizedVAE(16, 4, (16,), quantizer=build_quantizer(quantizer, 2, [4, 8], 4))
    # dead codes on: a codeword unused by half its share of a batch moves onto a residual
    return ResidualQuantizedVAE(16, 4, (16,), levels=2, codebook_size=8, geometry=geometry, kmeans_init=kmeans_init,
                                dead_code_threshold=0.5, usage_decay=0.5, **options)


def _assert_same_parameters(one: torch.nn.Module, other: torch.nn.Module) -> None:
    for (name, a), b in zip(one.named_parameters(), other.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("geometry, reconstruction", [("euclidean", "mse"), ("poincare", "mse"),
                                                      ("euclidean", "hyperbolic"), ("poincare", "gaussian")])
def test_stack_step_is_each_members_step(geometry, reconstruction):
    """Forward, gradients and one Riemannian Adam step of the stack are each member's own."""
    members = [_model(seed, geometry, reconstruction=reconstruction, kmeans_init=False) for seed in range(3)]
    alone = copy.deepcopy(members)
    for seed, (a, b) in enumerate(zip(members, alone)):  # dead codes: each run its own draws
        a.quantizer.generator = torch.Generator().manual_seed(seed)
        b.quantizer.generator = torch.Generator().manual_seed(seed)
    stack = VAEStack(members)
    assert isinstance(stack.quantizer, StackedResidualQuantizer)
    x = torch.randn(3, 20, 16, generator=torch.Generator().manual_seed(1)) * 0.5
    out = stack(x)
    assert out.codes.shape == (3, 20, 2) and out.reconstruction.shape == (3, 20, 16) and out.loss.shape == (3,)
    opt = riemannian_optimizer(stack.parameters(), 1e-2)
    out.loss.sum().backward()
    opt.step()
    stack.write_back()
    for run, model in enumerate(alone):
        o = model(x[run])
        assert torch.equal(o.codes, out.codes[run])
        torch.testing.assert_close(o.reconstruction, out.reconstruction[run], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o.loss, out.loss[run], rtol=1e-5, atol=1e-6)
        single = riemannian_optimizer(model.parameters(), 1e-2)
        o.loss.backward()
        single.step()
        _assert_same_parameters(model, members[run])


@pytest.mark.parametrize("geometry, kmeans_sample", [("euclidean", None), ("poincare", 0)])
def test_a_run_in_a_stack_is_the_single_run(geometry, kmeans_sample):
    """Same codes, losses and parameters; k-means init from all items or from the first batch,
    dead codes replaced on the way."""
    data, seeds = _data(), [0, 1, 2]
    options = dict(OPTIONS, kmeans_sample=kmeans_sample)
    singles = [_model(s, geometry) for s in seeds]
    single_hist = [train_vae(m, data, seed=s, **options) for m, s in zip(singles, seeds)]
    stacked = [_model(s, geometry) for s in seeds]
    seen = []
    stacked_hist = train_vaes(stacked, data, seeds=seeds, on_epoch=lambda run, epoch, m: seen.append((run, epoch)),
                              **options)
    assert seen == [(run, epoch) for epoch in range(3) for run in range(3)]
    for one, many, h1, hr in zip(singles, stacked, single_hist, stacked_hist):
        assert torch.equal(one.encode(data), many.encode(data))
        _assert_same_parameters(one, many)
        for level in range(2):
            torch.testing.assert_close(getattr(one.quantizer, f"usage_ema_{level}"),
                                       getattr(many.quantizer, f"usage_ema_{level}"))
        assert len(h1) == len(hr) == 3 and h1[0].keys() == hr[0].keys()
        for a, b in zip(h1, hr):
            for key in ("train/loss", "train/reconstruction_loss", "train/quantizer_loss", "eval/reconstruction_loss"):
                assert a[key] == pytest.approx(b[key], rel=1e-4), key
            assert a["eval/collision_rate"] == b["eval/collision_rate"]
    # and the runs really are different runs
    assert not torch.equal(stacked[0].quantizer.codebooks[0], stacked[1].quantizer.codebooks[0])


@pytest.mark.parametrize("geometry, quantizer", [("euclidean", None), ("poincare", None), ("euclidean", "hypervq")])
def test_runs_at_their_own_learning_rates_are_the_single_runs_at_them(geometry, quantizer):
    """Tables 2-4's tokenizer lrs stack too: each run trains at its own lr (stacked layers and
    codebooks through a per-run lr tensor, HyperVQ's member quantizers through their run's
    group), as a single run at that lr; seed 0 appears at three lrs, seed 1 at one."""
    data = _data()
    seeds, lrs = [0, 0, 0, 1], [1e-2, 1e-3, 1e-4, 1e-2]
    singles = [_model(s, geometry, quantizer=quantizer) for s in seeds]
    options = dict(OPTIONS, lr=None)
    single_hist = [train_vae(m, data, seed=s, **{**options, "lr": lr}) for m, s, lr in zip(singles, seeds, lrs)]
    stacked = [_model(s, geometry, quantizer=quantizer) for s in seeds]
    stacked_hist = train_vaes(stacked, data, seeds=seeds, **{**options, "lr": lrs})
    for one, many, h1, hr in zip(singles, stacked, single_hist, stacked_hist):
        assert torch.equal(one.encode(data), many.encode(data))
        _assert_same_parameters(one, many)
        assert [e["train/loss"] for e in h1] == pytest.approx([e["train/loss"] for e in hr], rel=1e-4)
    # the lr is what tells the three seed-0 runs apart
    assert stacked_hist[0][-1]["train/loss"] != stacked_hist[1][-1]["train/loss"] != stacked_hist[2][-1]["train/loss"]
    with pytest.raises(ValueError, match="one learning rate per model: 4 models, 2"):
        train_vaes(stacked, data, seeds=seeds, **{**options, "lr": [1e-2, 1e-3]})


def test_a_per_run_learning_rate_scales_each_runs_adam_step():
    """riemannian_optimizer with a tensor lr per parameter group: run r of a stacked parameter
    moves as Adam at lr_r would move it alone: bit for bit with torch's fused Adam (the same
    kernel on the run's block), to rounding with geoopt's Riemannian Adam on the ball. Runs 1
    and 2 share an lr: one block."""
    import geoopt

    from hrq.manifold import poincare_ball

    ball = poincare_ball(1.0)
    lrs = torch.tensor([1e-1, 1e-3, 1e-3, 1e-5])
    flat = torch.nn.Parameter(torch.randn(4, 5, 4, generator=torch.Generator().manual_seed(0)))
    curved = geoopt.ManifoldParameter(ball.projx(0.3 * torch.randn(4, 6, 4, generator=torch.Generator().manual_seed(1))),
                                      manifold=ball)
    alone = [(torch.nn.Parameter(flat.detach()[r].clone()),
              geoopt.ManifoldParameter(curved.detach()[r].clone(), manifold=ball)) for r in range(4)]
    start = flat.detach().clone()
    opt = riemannian_optimizer([{"params": [flat], "lr": lrs.view(4, 1, 1)},
                                {"params": [curved], "lr": lrs.view(4, 1, 1)}], 1.0)
    singles = [riemannian_optimizer([f, c], float(lr)) for (f, c), lr in zip(alone, lrs)]
    for _ in range(3):
        opt.zero_grad()
        (flat.sin().sum() + ball.dist0(curved).pow(2).sum()).backward()
        opt.step()
        for (f, c), single in zip(alone, singles):
            single.zero_grad()
            (f.sin().sum() + ball.dist0(c).pow(2).sum()).backward()
            single.step()
    for r, (f, c) in enumerate(alone):
        assert torch.equal(flat.detach()[r], f.detach())
        torch.testing.assert_close(curved.detach()[r], c.detach(), rtol=1e-5, atol=1e-7)
    moved = (flat.detach() - start).abs().flatten(1).max(1).values
    assert moved[0] > moved[1] > moved[3] > 0  # each run at its own lr, the smallest too


def test_identical_seeds_give_identical_runs():
    data = _data()
    models = [_model(7, "poincare") for _ in range(3)]
    hist = train_vaes(models, data, seeds=[7, 7, 7], **OPTIONS)
    for m, h in zip(models[1:], hist[1:]):
        for a, b in zip(m.parameters(), models[0].parameters()):
            assert torch.equal(a, b)
        assert torch.equal(m.encode(data), models[0].encode(data))
        assert [e["train/loss"] for e in h] == [e["train/loss"] for e in hist[0]]


def test_quantizers_that_cannot_stack_run_one_by_one_with_the_same_result():
    """HyperVQ is no ResidualQuantizer: the stack keeps the members' quantizers (each drawing its
    Gumbel noise from its own stream, annealing its own step) and stacks the layers around them."""
    data, seeds = _data(), [0, 1]
    singles = [_model(s, quantizer="hypervq") for s in seeds]
    single_hist = [train_vae(m, data, seed=s, **OPTIONS) for m, s in zip(singles, seeds)]
    stacked = [_model(s, quantizer="hypervq") for s in seeds]
    assert isinstance(VAEStack(stacked).quantizer, MemberQuantizers)
    stacked_hist = train_vaes(stacked, data, seeds=seeds, **OPTIONS)
    for one, many, h1, hr in zip(singles, stacked, single_hist, stacked_hist):
        assert many.quantizer.step == one.quantizer.step == 3 * 6
        assert torch.equal(one.encode(data), many.encode(data))
        _assert_same_parameters(one, many)
        assert [e["train/loss"] for e in h1] == pytest.approx([e["train/loss"] for e in hr], rel=1e-4)
        assert [e["train/temperature"] for e in h1] == [e["train/temperature"] for e in hr]


def test_only_one_shape_stacks():
    a = _model(0)
    with pytest.raises(ValueError, match="model 1 differs from model 0 in layers"):
        VAEStack([a, ResidualQuantizedVAE(16, 4, (32,), levels=2, codebook_size=8)])
    with pytest.raises(ValueError, match="geometry, curvature"):
        VAEStack([a, ResidualQuantizedVAE(16, 4, (16,), levels=2, codebook_size=8, geometry="poincare", curvature=0.5)])
    with pytest.raises(ValueError, match="in codebook_sizes"):
        VAEStack([a, ResidualQuantizedVAE(16, 4, (16,), levels=2, codebook_size=4)])
    with pytest.raises(ValueError, match="in quantizer"):
        VAEStack([_model(0, quantizer="hypervq"), _model(1, quantizer="rsq")])
    with pytest.raises(ValueError, match="one seed per model"):
        train_vaes([a], _data(), seeds=[0, 1], **OPTIONS)


def test_a_diverging_run_in_a_stack_is_named():
    models = [_model(s) for s in (3, 4)]
    with torch.no_grad():
        models[1].decoder[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"seed 4, epoch 1, step 1: the training loss is nan"):
        train_vaes(models, _data(), seeds=[3, 4], **OPTIONS)
