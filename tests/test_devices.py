"""The training paths on every device this machine has: the CPU always, CUDA when visible.

``scripts/gpu-check.sh`` runs this file on a GPU machine (``-m cuda``); on a CPU-only machine
the same code paths (device generators, device-side sampling, stacked steps, per-epoch reads)
run on the CPU, so nothing here is skipped.
"""

from __future__ import annotations

import pytest
import torch

from hrq.data import make_hierarchy, transitive_closure
from hrq.hierarchy import HierarchyTokenizer, train_hierarchy_tokenizer, train_hierarchy_tokenizers
from hrq.quantize import ResidualQuantizer
from hrq.quantize.stacked import StackedResidualQuantizer

pytestmark = pytest.mark.cuda
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPTIONS = dict(epochs=4, lr=1.0, batch_size=16, negatives=10, warmup_epochs=1, warmup_lr=0.01, progress=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_stacked_tokenizer_on_device_is_the_single_run(device, geometry):
    tree = make_hierarchy(3, 3)
    rel = transitive_closure(tree.parent)
    n = len(tree.names)

    def model(seed):
        torch.manual_seed(seed)
        return HierarchyTokenizer(n, 4, 2, 8, geometry=geometry).to(device)

    alone = [model(s) for s in (0, 1)]
    for m, s in zip(alone, (0, 1)):
        train_hierarchy_tokenizer(m, rel, seed=s, **OPTIONS)
    stacked = [model(s) for s in (0, 1)]
    history = train_hierarchy_tokenizers(stacked, rel, seeds=[0, 1], **OPTIONS)
    for one, many in zip(alone, stacked):
        assert one.embedding.device.type == device
        assert torch.equal(one.codes(), many.codes())
        torch.testing.assert_close(one.embedding.detach(), many.embedding.detach(), rtol=1e-4, atol=1e-5)
    assert all(torch.isfinite(torch.tensor(h[-1]["train/loss"])) for h in history)


@pytest.mark.parametrize("device", DEVICES)
def test_stacked_quantizer_with_dead_codes_on_device(device):
    members = []
    for seed in range(2):
        torch.manual_seed(seed)
        q = ResidualQuantizer(2, 8, 4, geometry="poincare", dead_code_threshold=0.9, usage_decay=0.5).to(device)
        q.generator = torch.Generator(device=device).manual_seed(seed)
        members.append(q)
    stack = StackedResidualQuantizer(members)
    x = (torch.randn(2, 32, 4, device=device) * 0.3).requires_grad_()
    out = stack(x)
    out.loss.sum().backward()
    assert out.codes.device.type == device and out.loss.shape == (2,)
    assert torch.isfinite(x.grad).all()
    stack.write_back()
    assert all(q.codebooks[0].device.type == device for q in members)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_stacked_vaes_at_their_own_lrs_on_device_are_the_single_runs(device, geometry):
    """Tables 2-4's stack of seeds x tokenizer lrs on the device: per-run lrs through fused Adam
    blocks (step counters on the device) and geoopt, each run its single run."""
    from hrq.models import ResidualQuantizedVAE, train_vae, train_vaes

    data = torch.nn.functional.normalize(torch.randn(64, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    data = data.to(device)

    def model(seed):
        torch.manual_seed(seed)
        return ResidualQuantizedVAE(16, 4, (16,), levels=2, codebook_size=8, geometry=geometry).to(device)

    runs = [(0, 3e-3), (1, 3e-3), (0, 1e-4)]
    options = dict(epochs=2, batch_size=16, progress=False)
    alone = [model(seed) for seed, _ in runs]
    for m, (seed, lr) in zip(alone, runs):
        train_vae(m, data, seed=seed, lr=lr, **options)
    stacked = [model(seed) for seed, _ in runs]
    train_vaes(stacked, data, seeds=[s for s, _ in runs], lr=[lr for _, lr in runs], **options)
    for one, many in zip(alone, stacked):
        assert next(many.parameters()).device.type == device
        assert torch.equal(one.encode(data), many.encode(data))
        for a, b in zip(one.parameters(), many.parameters()):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-5)
