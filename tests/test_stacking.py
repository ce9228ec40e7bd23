"""Stacked training (issue 16): R runs in one process give what R single runs give."""

from __future__ import annotations

import copy

import pytest
import torch

from hrq.checks import NonFiniteError
from hrq.data import make_hierarchy, transitive_closure
from hrq.hierarchy import HierarchyTokenizer, TokenizerStack, train_hierarchy_tokenizer, train_hierarchy_tokenizers
from hrq.manifold import poincare_ball
from hrq.quantize import ResidualQuantizer, build_quantizer
from hrq.quantize.stacked import MemberQuantizers, StackedResidualQuantizer, stackable

OPTIONS = dict(epochs=6, lr=1.0, batch_size=16, negatives=10, warmup_epochs=2, warmup_lr=0.01, progress=False)


def _relations():
    tree = make_hierarchy(3, 3)
    return len(tree.names), transitive_closure(tree.parent)


def _model(seed: int, n: int, geometry: str = "poincare", quantizer: str | None = None) -> HierarchyTokenizer:
    """What the stage builds for one seed: everything random drawn after seeding with it."""
    torch.manual_seed(seed)
    if quantizer is not None:
        return HierarchyTokenizer(n, 4, quantizer=build_quantizer(quantizer, 2, 8, 4, kmeans_init=True))
    return HierarchyTokenizer(n, 4, 2, 8, geometry=geometry)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_a_run_in_a_stack_is_the_single_run(geometry):
    n, rel = _relations()
    seeds = [0, 1, 2]
    singles = [_model(s, n, geometry) for s in seeds]
    single_hist = [train_hierarchy_tokenizer(m, rel, seed=s, **OPTIONS) for m, s in zip(singles, seeds)]
    stacked = [_model(s, n, geometry) for s in seeds]
    stacked_hist = train_hierarchy_tokenizers(stacked, rel, seeds=seeds, **OPTIONS)
    for one, many, h1, hr in zip(singles, stacked, single_hist, stacked_hist):
        assert torch.equal(one.codes(), many.codes())
        torch.testing.assert_close(one.embedding.detach(), many.embedding.detach(), rtol=1e-4, atol=1e-5)
        for level in range(2):
            torch.testing.assert_close(one.quantizer.codebooks[level].detach(),
                                       many.quantizer.codebooks[level].detach(), rtol=1e-4, atol=1e-5)
        assert len(h1) == len(hr) == OPTIONS["epochs"]
        for a, b in zip(h1, hr):
            assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-5)
            assert a["collision_rate"] == b["collision_rate"]
    # and the runs really are different runs
    assert not torch.equal(stacked[0].embedding, stacked[1].embedding)


def test_identical_seeds_give_identical_runs():
    n, rel = _relations()
    models = [_model(7, n) for _ in range(3)]
    hist = train_hierarchy_tokenizers(models, rel, seeds=[7, 7, 7], **OPTIONS)
    for m, h in zip(models[1:], hist[1:]):
        assert torch.equal(m.embedding, models[0].embedding)
        assert torch.equal(m.codes(), models[0].codes())
        assert [e["train/loss"] for e in h] == [e["train/loss"] for e in hist[0]]


def test_quantizers_that_cannot_stack_run_side_by_side_with_the_same_result():
    """HG-Rec's quantizer is not a ResidualQuantizer: the stack keeps the members' quantizers and
    still shares the embedding table and optimizer steps."""
    n, rel = _relations()
    options = dict(OPTIONS, codebook_optimizer={"kind": "adam", "lr": 1e-3})
    singles = [_model(s, n, quantizer="hgrec") for s in (0, 1)]
    for m, s in zip(singles, (0, 1)):
        train_hierarchy_tokenizer(m, rel, seed=s, **options)
    stacked = [_model(s, n, quantizer="hgrec") for s in (0, 1)]
    stack = TokenizerStack(stacked)
    assert isinstance(stack.quantizer, MemberQuantizers)
    train_hierarchy_tokenizers(stacked, rel, seeds=[0, 1], **options)
    for one, many in zip(singles, stacked):
        assert torch.equal(one.codes(), many.codes())
        torch.testing.assert_close(one.embedding.detach(), many.embedding.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
@pytest.mark.parametrize("dead_code_threshold", [0.0, 0.9])
def test_stacked_quantizer_step_is_each_members_step(geometry, dead_code_threshold):
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        q = ResidualQuantizer(3, 8, 4, geometry=geometry, dead_code_threshold=dead_code_threshold, usage_decay=0.5)
        q.generator = torch.Generator().manual_seed(seed)
        members.append(q)
    alone = copy.deepcopy(members)
    for seed, q in enumerate(alone):
        q.generator = torch.Generator().manual_seed(seed)
    stack = StackedResidualQuantizer(members)
    x = torch.randn(3, 20, 4) * 0.3
    if geometry == "poincare":
        x = poincare_ball(1.0).expmap0(x)
    for _ in range(3):  # several batches, so that dead codes are replaced on the way
        xs = x.clone().requires_grad_()
        out = stack(xs)
        out.loss.sum().backward()
        assert out.codes.shape == (3, 20, 3) and out.loss.shape == (3,)
        for run, q in enumerate(alone):
            xr = x[run].clone().requires_grad_()
            o = q(xr)
            o.loss.backward()
            assert torch.equal(o.codes, out.codes[run])
            torch.testing.assert_close(o.loss, out.loss[run])
            torch.testing.assert_close(xr.grad, xs.grad[run])
            for level in range(3):
                torch.testing.assert_close(q.codebooks[level].grad, stack.codebooks[level].grad[run])
        x = x.roll(1, dims=1)
    stack.write_back()
    for q, member in zip(alone, members):
        for level in range(3):
            assert torch.equal(q.codebooks[level].detach(), member.codebooks[level].detach())
            assert torch.equal(getattr(q, f"usage_ema_{level}"), getattr(member, f"usage_ema_{level}"))


def test_only_one_configuration_stacks():
    a = ResidualQuantizer(2, 8, 4)
    assert stackable([a, ResidualQuantizer(2, 8, 4)])
    assert not stackable([a, ResidualQuantizer(2, 16, 4)])
    assert not stackable([a, ResidualQuantizer(2, 8, 4, geometry="poincare")])
    assert not stackable([build_quantizer("hgrec", 2, 8, 4)])
    with pytest.raises(ValueError, match="one configuration"):
        StackedResidualQuantizer([a, ResidualQuantizer(3, 8, 4)])
    n, rel = _relations()
    with pytest.raises(ValueError, match="share n_nodes"):
        TokenizerStack([HierarchyTokenizer(n, 4, 2, 8), HierarchyTokenizer(n + 1, 4, 2, 8)])
    with pytest.raises(ValueError, match="one seed per model"):
        train_hierarchy_tokenizers([HierarchyTokenizer(n, 4, 2, 8)], rel, seeds=[0, 1], **OPTIONS)


def test_a_diverging_run_in_a_stack_is_named():
    n, rel = _relations()
    models = [_model(s, n, "euclidean") for s in (3, 4)]
    with pytest.raises(NonFiniteError, match=r"seed 3, epoch 2, step \d+"):
        train_hierarchy_tokenizers(models, rel, seeds=[3, 4], **dict(OPTIONS, lr=1e30, warmup_epochs=1))


def test_a_failing_compiler_falls_back_to_eager_training(monkeypatch):
    """compiled=True on a machine where torch.compile cannot build: a warning, then the eager
    step, with exactly the eager results."""
    n, rel = _relations()

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler\nlong details")
        return call

    eager = _model(0, n)
    train_hierarchy_tokenizer(eager, rel, seed=0, **OPTIONS)
    monkeypatch.setattr(torch, "compile", broken)
    fallback = _model(0, n)
    with pytest.warns(UserWarning, match=r"torch.compile of the tokenizer step failed \(RuntimeError: no C\+\+ "
                                         r"compiler\); training eagerly"):
        train_hierarchy_tokenizer(fallback, rel, seed=0, compiled=True, **OPTIONS)
    assert torch.equal(eager.embedding, fallback.embedding)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")  # dynamo's own
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo instantiates autograd Functions
def test_a_compiled_step_trains_as_the_eager_one():
    """torch.compile of the step's losses (~1 min of compiling on 2 cores): the same training
    up to rounding."""
    n, rel = _relations()
    eager, compiled = _model(0, n), _model(0, n)
    h_eager = train_hierarchy_tokenizer(eager, rel, seed=0, **OPTIONS)
    h_compiled = train_hierarchy_tokenizer(compiled, rel, seed=0, compiled=True, **OPTIONS)
    for a, b in zip(h_eager, h_compiled):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-3)
    torch.testing.assert_close(eager.embedding.detach(), compiled.embedding.detach(), rtol=1e-3, atol=1e-4)


def test_a_job_spec_tells_its_runs_by_seed_and_lr():
    """TokenizerJob round-trips through its JSON params; a run's lr is its own or the job's; a
    (seed, lr) twice is refused; the Table 1 stage refuses runs of their own lr (it trains one)."""
    from hrq.stages.jobs import TokenizerJob, TokenizerRun
    from hrq.stages.tokenize import tokenize_hierarchy

    runs = tuple(TokenizerRun(seed, {"tokens": f"lr{lr:g}/seed{seed}/tokens.parquet"}, lr=lr)
                 for lr in (1e-3, 1e-4) for seed in (0, 1))
    job = TokenizerJob(method="hrqvae", method_spec={"kind": "vae"}, k=3, s=256, h=32, device="cpu",
                       options={"epochs": 2, "lr": [1e-3, 1e-4]}, runs=runs)
    assert TokenizerJob.from_params(job.to_params()) == job
    assert [job.lr_of(r) for r in job.runs] == [1e-3, 1e-3, 1e-4, 1e-4] and job.seeds == [0, 1, 0, 1]
    assert job.run_options(runs[2]) == {"epochs": 2, "lr": 1e-4}
    plain = TokenizerJob(method="rq", method_spec={}, k=3, s=64, h=4, device="cpu", options={"lr": 1.0},
                         runs=(TokenizerRun(0, {}),))
    assert plain.lr_of(plain.runs[0]) == 1.0 and plain.run_options(plain.runs[0]) == {"lr": 1.0}
    with pytest.raises(ValueError, match=r"runs repeat \(seed, lr\)"):
        TokenizerJob(method="rq", method_spec={}, k=3, s=64, h=4, device="cpu", options={"lr": 1.0},
                     runs=(TokenizerRun(0, {}, lr=0.1), TokenizerRun(0, {}, lr=0.1)))
    with pytest.raises(ValueError, match="every run at hierarchy.tokenizer.lr"):
        tokenize_hierarchy({}, {}, job.to_params())
