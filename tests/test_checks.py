"""Bad numbers are refused: non-finite inputs and losses stop with a message that says where, and
near-boundary / huge inputs stay finite through every quantizer kind."""

import numpy as np
import pandas as pd
import pytest
import torch

from hrq.checks import LossMonitor, NonFiniteError, require_finite
from hrq.data import make_hierarchy, transitive_closure
from hrq.hierarchy import HierarchyTokenizer, train_hierarchy_tokenizer
from hrq.quantize import QUANTIZER_KINDS, build_quantizer, quantizer_option_names


def test_require_finite_names_shape_count_and_first_row():
    x = torch.zeros(5, 3)
    require_finite(x, "fine")  # no error
    x[3, 1] = float("nan")
    x[4, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"items: 2 of 5 rows of a tensor of shape \(5, 3\) hold NaN and inf "
                                             r"\(first bad row: 3\)"):
        require_finite(x, "items")


def test_loss_monitor_reports_the_first_bad_step_of_the_epoch():
    monitor = LossMonitor()
    monitor.start_epoch(0)
    for step in range(4):
        monitor.observe(torch.tensor(1.0), step)
    monitor.check()  # all finite
    monitor.start_epoch(1)
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan"), 3.0]):
        monitor.observe(torch.tensor(value), step)
    with pytest.raises(NonFiniteError, match="epoch 2, step 3: the training loss is inf"):
        monitor.check()


@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_every_quantizer_refuses_nan_in_eval_mode(kind):
    q = build_quantizer(kind, 3, 8, 4).eval()
    x = torch.randn(10, 4) * 0.1
    x[7] = float("nan")
    # Before: the NaN row got the valid code [0, 0, 0].
    with pytest.raises(NonFiniteError, match=r"input: 1 of 10 rows of a tensor of shape \(10, 4\) hold NaN "
                                             r"\(first bad row: 7\)"):
        q.encode(x)


def test_hierarchy_training_stops_at_the_first_non_finite_loss():
    tree = make_hierarchy(2, 3)
    rel = transitive_closure(tree.parent)
    torch.manual_seed(0)
    model = HierarchyTokenizer(len(tree.names), 4, 2, 4, geometry="euclidean")
    seen = []
    # lr 1e30 throws the Euclidean embedding to inf within the first epoch after warm-up
    with pytest.raises(NonFiniteError, match=r"epoch 2, step \d+: the training loss is (nan|inf)"):
        train_hierarchy_tokenizer(model, rel, epochs=5, lr=1e30, warmup_epochs=1, batch_size=4, progress=False,
                                  on_epoch=lambda epoch, metrics: seen.append(epoch))
    assert seen == [0]  # the diverged epoch was not reported as a finished one


def test_a_diverging_stage_writes_nothing_and_its_run_fails(tmp_path):
    """The tokenizer stage at an absurd lr: the error names the run (of the two stacked seeds,
    the one that diverged), epoch and step, no output file exists, and the MLflow runs are FAILED."""
    from hrq.stages.tokenize import tokenize_hierarchy
    from hrq.tracking import default_tracking_uri

    tree = make_hierarchy(2, 3)
    rel = transitive_closure(tree.parent).numpy()
    n = len(tree.names)
    pd.DataFrame({"node_id": np.arange(n), "name": tree.names, "depth": tree.depth.numpy(),
                  "top_level": tree.top_level.numpy()}).to_parquet(tmp_path / "nodes.parquet")
    pd.DataFrame({"child": rel[:, 0], "parent": rel[:, 1],
                  "split": ["train"] * (len(rel) - 3) + ["test"] * 3}).to_parquet(tmp_path / "relations.parquet")
    from hrq.stages.jobs import TokenizerJob, TokenizerRun

    cell = {"dataset": "toy", "method": "rq", "k": 2, "s": 4, "h": 4}
    runs = []
    for seed in (0, 1):  # two seeds trained as one stack
        out = tmp_path / f"seed{seed}"
        files = {"tokens": str(out / "tokens.parquet"), "metrics": str(out / "metrics.parquet")}
        runs.append(TokenizerRun(seed, files, {"results_dir": str(tmp_path / "results"), "experiment": "test/table1",
                                               "cell": cell, "job_key": files["tokens"], "run_name": f"seed{seed} tokenizer"}))
    job = TokenizerJob(method="rq", method_spec={"geometry": "euclidean"}, k=2, s=4, h=4, device="cpu",
                       options={"epochs": 4, "warmup_epochs": 1, "warmup_lr": 0.01, "lr": 1e30, "batch_size": 4,
                                "negatives": 5, "commitment": 0.25, "init_scale": 1e-3}, runs=tuple(runs))
    inputs = {"nodes": str(tmp_path / "nodes.parquet"), "relations": str(tmp_path / "relations.parquet")}
    with pytest.raises(NonFiniteError, match=r"test/table1 dataset=toy method=rq k=2 s=4 h=4 seed(0|1) tokenizer: "
                                             r"seed \1, epoch 2, step \d+: the training loss is (nan|inf).*"
                                             r"nothing was written"):
        tokenize_hierarchy(inputs, {}, job.to_params())
    assert not any((tmp_path / f"seed{seed}").exists() for seed in (0, 1))
    import mlflow

    client = mlflow.MlflowClient(default_tracking_uri(str(tmp_path / "results")))
    runs = client.search_runs([client.get_experiment_by_name("test/table1").experiment_id],
                              "tags.`hrq.kind` = 'job'")
    assert [r.info.status for r in runs] == ["FAILED", "FAILED"]  # the whole stack failed

CURVATURES = (0.1, 1.0, 4.0)


def _near_boundary(n: int, dim: int, c: float, gen: torch.Generator) -> torch.Tensor:
    """``[n, dim]`` float32 points with 1 − √c‖x‖ from 1e-1 down to 1e-7 (float32 rounds the
    closest ones onto the boundary itself, as real training data can)."""
    direction = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen, dtype=torch.float64), dim=-1)
    gap = torch.logspace(-1, -7, n, dtype=torch.float64)
    return (direction * ((1 - gap) / c**0.5).unsqueeze(-1)).float()


@pytest.mark.slow
@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_near_boundary_and_huge_inputs_stay_finite_through_every_kind(kind):
    """1e5 float32 points per curvature at 1 − √c‖x‖ down to 1e-7, and 1e5 more with norms up to 1e4
    (off the ball: what an unprojected encoder can emit): forward and backward stay finite."""
    gen = torch.Generator().manual_seed(0)
    n, dim = 100_000, 8
    for c in CURVATURES:
        options = {"curvature": c} if "curvature" in quantizer_option_names(kind) else {}
        q = build_quantizer(kind, 3, 16, dim, **options).train()
        ball = _near_boundary(n, dim, c, gen)
        huge = torch.randn(n, dim, generator=gen) * torch.logspace(0, 4, n).unsqueeze(-1)
        for x in (ball, huge):
            x = x.clone().requires_grad_(True)
            out = q(x)
            loss = out.loss + out.quantized.pow(2).sum(-1).clamp_max(1e6).mean()
            loss.backward()
            assert torch.isfinite(out.quantized).all() and torch.isfinite(loss), (kind, c)
            assert torch.isfinite(x.grad).all(), (kind, c)
            for p in q.parameters():
                assert p.grad is None or torch.isfinite(p.grad).all(), (kind, c)
            q.zero_grad(set_to_none=True)


def test_vaes_refuse_non_finite_data_and_stop_on_a_non_finite_loss():
    from hrq.models import ResidualQuantizedVAE, train_vae

    torch.manual_seed(0)
    x = torch.randn(64, 6)
    for geometry in ("euclidean", "poincare"):
        vae = ResidualQuantizedVAE(6, 4, (8,), levels=2, codebook_size=4, geometry=geometry).eval()
        bad = x.clone()
        bad[5, 2] = float("inf")
        with pytest.raises(NonFiniteError, match=r"ResidualQuantizedVAE input: 1 of 64 rows .* hold inf \(first bad row: 5\)"):
            vae.encode(bad)
        with pytest.raises(NonFiniteError, match="train_vae data: 1 of 64 rows"):
            train_vae(vae, bad, epochs=1, batch_size=16, progress=False)
        # A loss that diverges mid-training: stop at the end of that epoch, naming the step.
        vae = ResidualQuantizedVAE(6, 4, (8,), levels=2, codebook_size=4, geometry=geometry)
        seen = []
        with pytest.raises(NonFiniteError, match=r"epoch 1, step 1: the training loss is (nan|inf)"):
            for p in vae.encoder.parameters():
                with torch.no_grad():
                    p.fill_(float("nan"))
            train_vae(vae, x, epochs=2, batch_size=16, kmeans_sample=0, progress=False,
                      on_epoch=lambda epoch, metrics: seen.append(epoch))
        assert seen == []


@pytest.mark.parametrize("kind", ["rq", "hrq", "hgrec"])
def test_a_nan_in_the_first_kmeans_batch_is_refused(kind):
    """Before: one NaN row in the first training batch turned every codebook into NaN."""
    q = build_quantizer(kind, 2, 4, 3, kmeans_init=True).train()
    x = torch.randn(32, 3) * 0.1
    x[9] = float("nan")
    with pytest.raises(NonFiniteError, match=r"k-means sample: 1 of 32 rows .* hold NaN \(first bad row: 9\)"):
        q(x)
    assert all(torch.isfinite(b).all() for b in q.codebooks)


def test_seq2seq_training_stops_at_a_non_finite_loss():
    from hrq.seq2seq import Seq2SeqConfig, build_model, train_seq2seq

    torch.manual_seed(0)
    model = build_model(12, Seq2SeqConfig(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, dropout=0.0,
                                          num_decoder_layers=1))
    src = torch.randint(2, 12, (20, 3))
    tgt = torch.randint(2, 12, (20, 2))
    train_seq2seq(model, src, tgt, epochs=1, batch_size=8, lr=1e-3, progress=False)  # finite: no error
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 1: the training loss is nan"):
        train_seq2seq(model, src, tgt, epochs=2, batch_size=8, lr=1e-3, progress=False)
