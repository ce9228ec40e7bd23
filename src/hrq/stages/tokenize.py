"""Tokenizer stages: one seed of one (method, k, s, h) tokenizer.

Outputs:

* ``tokens.parquet``: entity_id, codes (list<int64>, the k semantic tokens plus the extra token
  that makes every multitoken unique), vector (list<float32>, the continuous point that was
  quantized: the node embedding, or the VAE latent x_s);
* ``metrics.parquet``: the long per-seed schema (seed, metric, value) of the tokenizer's
  diagnostics: per-level usage and perplexity, collision rate before the extra token, largest
  collision group, first-token purity against the ground truth where the data has one, and
  per task: ``mean_rank``/``map`` of the embedding and the embedding oracle's
  ``oracle_recall@10`` (hierarchy, :func:`hrq.baselines.embedding_oracle`) or reconstruction
  error and the latent-norm statistics of the paper's Table 4 (VAEs); on the ball,
  ``boundary_share`` and ``max_norm_ratio`` (:func:`hrq.baselines.boundary_pinning`).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from hrq.baselines import boundary_pinning, embedding_oracle
from hrq.grid import level_sizes
from hrq.hierarchy import HierarchyTokenizer, ranking_metrics, train_hierarchy_tokenizers
from hrq.io import read_parquet, write_parquet
from hrq.models import evaluate_vae, train_vaes
from hrq.models.training import collision_summary
from hrq.quantize import append_dedup_token, codebook_stats, first_token_purity, random_codes
from hrq.stages.common import (
    build_method_quantizer,
    build_vae,
    device_for,
    epoch_logger,
    job_runs,
    metrics_frame,
    seed_everything,
)
from hrq.stages.data import load_vectors
from hrq.stages.jobs import TokenizerJob, TokenizerRun


def _write_tokens(codes: torch.Tensor, vectors: torch.Tensor | None, path) -> None:
    frame = {"entity_id": np.arange(codes.shape[0], dtype=np.int64), "codes": list(codes.cpu().numpy())}
    if vectors is not None:
        frame["vector"] = list(vectors.detach().cpu().numpy().astype(np.float32))
    write_parquet(pd.DataFrame(frame), path)


def _diagnostics(codes: torch.Tensor, sizes, groups: torch.Tensor | None) -> dict[str, float]:
    out = codebook_stats(codes, sizes).as_dict()
    known = groups >= 0 if groups is not None else None
    if known is not None and bool(known.any()):  # ground truth known (synthetic data)
        out["first_token_purity"] = first_token_purity(codes[known, 0].cpu(), groups[known].cpu())
    return out


def _training_summary(history, collision_key: str, seconds: float, runs: int = 1) -> dict[str, float]:
    """HG-Rec's training-cost view (its Table 2, Fig. 4/5): the lowest whole-multitoken collision
    rate during training, the epochs needed to reach it and the training seconds they took
    (HG-Rec's "Total": the sum of the epochs' training passes), the mean seconds of an epoch's
    training pass, and the whole job's wall time (``train_seconds``, evaluation included).
    For ``runs`` runs trained as one stack every time is the stack's divided by ``runs``: one
    run's share, comparable between methods stacked alike."""
    summary = collision_summary(history, key=collision_key)
    del summary["best_collision_epoch"]  # = epochs_to_min_collision - 1
    seconds /= runs
    epoch_seconds = [h["train/epoch_seconds"] / runs for h in history]
    return {**summary, "train_seconds": seconds, "epoch_seconds": sum(epoch_seconds) / max(len(history), 1),
            "seconds_to_min_collision": sum(epoch_seconds[:summary["epochs_to_min_collision"]])}


def _write_run(job: TokenizerJob, run: TokenizerRun, mlflow_run, metrics: Mapping[str, float],
               codes: torch.Tensor, sizes, tokens: torch.Tensor, vectors: torch.Tensor | None) -> None:
    """A run's outputs: its final metrics in its MLflow run, the per-level usage heatmap of its
    ``codes [N, k]`` (when the rule asks for one), its ``tokens`` (and ``vectors``) and metrics files."""
    mlflow_run.log_metrics({f"tokenizer/final/{key}": v for key, v in metrics.items()})
    if "usage" in run.outputs:
        from hrq.quantize.plots import usage_heatmap

        usage_heatmap(codes.cpu(), sizes, run.outputs["usage"],
                      title=f"{job.method} k={job.k} s={job.s} h={job.h} seed {run.seed}")
    _write_tokens(tokens, vectors, run.outputs["tokens"])
    write_parquet(metrics_frame(run.seed, metrics), run.outputs["metrics"])


def tokenize_hierarchy(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Jointly train a node embedding and its (H)RQ on the train relations (paper §4.1), for each
    seed of the job (:class:`~hrq.stages.jobs.TokenizerJob`), all seeds as one stack.

    Every seed's files and MLflow child run are what a job of that seed alone writes: the stack
    only shares the training steps (:func:`hrq.hierarchy.train_hierarchy_tokenizers`)."""
    job = TokenizerJob.from_params(params)
    if any(run.lr is not None for run in job.runs):
        raise ValueError("a Table 1 tokenizer job trains every run at hierarchy.tokenizer.lr; runs of their "
                         f"own lr: {[run.lr for run in job.runs]}")
    opts = job.options
    device = device_for({"device": job.device})
    nodes = read_parquet(inputs["nodes"])
    rel = read_parquet(inputs["relations"])
    train = torch.tensor(rel.loc[rel["split"] == "train", ["child", "parent"]].to_numpy(), dtype=torch.long)
    test = torch.tensor(rel.loc[rel["split"] == "test", ["child", "parent"]].to_numpy(), dtype=torch.long)
    models = []
    for run in job.runs:  # each seed's model exactly as a job of that seed alone builds it
        seed_everything(run.seed)
        quantizer = build_method_quantizer(job.method_spec, job.k, job.s, job.h,
                                           {"commitment": opts["commitment"], "kmeans_init": True})
        # The embedding lives on the quantizer's own ball (one curvature, wherever it was configured).
        models.append(HierarchyTokenizer(len(nodes), job.h, quantizer=quantizer, init_scale=opts["init_scale"]).to(device))
    hypers = [{"method": job.method, "method_spec": job.method_spec, "k": job.k, "s": job.s, "h": job.h,
               "seed": run.seed, "tokenizer": opts, "device": str(device), "train_relations": int(train.shape[0]),
               "stacked_runs": len(job.runs)} for run in job.runs]
    groups = torch.tensor(nodes.sort_values("node_id")["top_level"].to_numpy(), dtype=torch.long)
    with job_runs([run.tracking for run in job.runs], hypers, datasets=inputs) as mlflow_runs:
        loggers = [epoch_logger(r, "tokenizer", opts["epochs"]) for r in mlflow_runs]
        start = time.perf_counter()
        histories = train_hierarchy_tokenizers(
            models, train, seeds=job.seeds, epochs=opts["epochs"], lr=opts["lr"], batch_size=opts["batch_size"],
            negatives=opts["negatives"], warmup_epochs=opts["warmup_epochs"], warmup_lr=opts["warmup_lr"],
            codebook_optimizer=job.method_spec.get("codebook_optimizer"), compiled=opts.get("compile", False),
            on_epoch=lambda run, epoch, metrics: loggers[run](epoch, metrics))
        seconds = time.perf_counter() - start
        for run, model, history, mlflow_run in zip(job.runs, models, histories, mlflow_runs):
            codes = model.codes()
            metrics = _diagnostics(codes, model.quantizer.codebook_sizes, groups)
            metrics.update(ranking_metrics(model, train, len(nodes)))
            # After training only: the test relations say what the embedding alone would score.
            metrics.update(embedding_oracle(model.embedding.detach(), model.ranking_scores, train, test))
            if model.ball is not None or model.tangent_ball is not None:  # HG-Rec: exp0 of its tangent vectors
                metrics.update(boundary_pinning(model.on_ball(model.embedding.detach()), model.curvature))
            metrics.update(_training_summary(history, "collision_rate", seconds, runs=len(job.runs)))
            _write_run(job, run, mlflow_run, metrics, codes, model.quantizer.codebook_sizes,
                       append_dedup_token(codes), model.embedding)


def tokenize_items(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Train an (H)RQ-VAE on item embeddings (paper §4.2) for each run of the job
    (:class:`~hrq.stages.jobs.TokenizerJob`: its seeds, each at its own tokenizer lr where the
    job stacks lrs; all runs as one stack, :func:`hrq.models.train_vaes`), or draw the Random
    baseline."""
    job = TokenizerJob.from_params(params)
    opts = job.options
    device = device_for({"device": job.device})
    vectors = load_vectors(inputs["embeddings"]).to(device)
    items = read_parquet(inputs["catalog"]).sort_values("item_id")
    groups = torch.tensor(items["top_level"].to_numpy(), dtype=torch.long) if "top_level" in items else None
    hypers = [{"method": job.method, "method_spec": job.method_spec, "k": job.k, "s": job.s, "h": job.h,
               "seed": run.seed, "device": str(device), "items": int(vectors.shape[0]), **job.logged}
              for run in job.runs]
    if job.method_spec["kind"] == "random":
        with job_runs([run.tracking for run in job.runs], hypers, datasets=inputs) as mlflow_runs:
            for run, mlflow_run in zip(job.runs, mlflow_runs):
                sizes = level_sizes(job.k, job.s)
                tokens = random_codes(vectors.shape[0], sizes, generator=torch.Generator().manual_seed(run.seed))
                metrics = _diagnostics(tokens[:, : job.k], sizes, groups)
                _write_run(job, run, mlflow_run, metrics, tokens[:, : job.k], sizes, tokens, None)
        return

    models = []
    for run in job.runs:  # each seed's model exactly as a job of that seed alone builds it
        seed_everything(run.seed)
        models.append(build_vae(vectors.shape[1], job.h, job.k, job.s, job.method_spec, opts).to(device))
    for run, hyper in zip(job.runs, hypers):
        hyper.update(tokenizer=job.run_options(run), stacked_runs=len(job.runs))
    with job_runs([run.tracking for run in job.runs], hypers, datasets=inputs) as mlflow_runs:
        loggers = [epoch_logger(r, "tokenizer", opts["epochs"]) for r in mlflow_runs]
        start = time.perf_counter()
        histories = train_vaes(models, vectors, seeds=job.seeds, epochs=opts["epochs"], batch_size=opts["batch_size"],
                               lr=[job.lr_of(run) for run in job.runs], kmeans_sample=opts.get("kmeans_sample"),
                               on_epoch=lambda run, epoch, metrics: loggers[run](epoch, metrics))
        seconds = time.perf_counter() - start
        for run, model, history, mlflow_run in zip(job.runs, models, histories, mlflow_runs):
            model.eval()
            with torch.no_grad():
                codes = model.encode(vectors)
                latent = model.to_latent(vectors)
                norms = model.latent_norms(vectors)
            metrics = _diagnostics(codes, model.quantizer.codebook_sizes, groups)
            metrics["reconstruction_loss"] = evaluate_vae(model, vectors)["reconstruction_loss"]
            metrics.update(norm_mean=float(norms.mean()), norm_std=float(norms.std()),
                           norm_cv=float(norms.std() / norms.mean()))
            metrics.update(_training_summary(history, "eval/collision_rate", seconds, runs=len(job.runs)))
            ball = model.ball if model.ball is not None else model.quantizer.tangent_ball
            if ball is not None:  # the latent lives on the ball, or (HG-Rec) is compared there after exp0
                metrics.update(boundary_pinning(latent if model.ball is not None else ball.expmap0(latent),
                                                ball.c.item()))
            _write_run(job, run, mlflow_run, metrics, codes, model.quantizer.codebook_sizes,
                       append_dedup_token(codes), latent)

