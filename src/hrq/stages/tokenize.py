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
from hrq.hierarchy import HierarchyTokenizer, ranking_metrics, train_hierarchy_tokenizer
from hrq.io import read_parquet, write_parquet
from hrq.models import evaluate_vae, train_vae
from hrq.models.training import collision_summary
from hrq.quantize import append_dedup_token, codebook_stats, first_token_purity, random_codes
from hrq.stages.common import (
    build_method_quantizer,
    build_vae,
    device_for,
    epoch_logger,
    job_run,
    metrics_frame,
    seed_everything,
)
from hrq.stages.data import load_vectors


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


def _training_summary(history, collision_key: str, seconds: float) -> dict[str, float]:
    """HG-Rec's training-cost view (its Table 2, Fig. 4/5): the lowest whole-multitoken collision
    rate during training, the epochs needed to reach it and the training seconds they took
    (HG-Rec's "Total": the sum of the epochs' training passes), the mean seconds of an epoch's
    training pass, and the whole job's wall time (``train_seconds``, evaluation included)."""
    summary = collision_summary(history, key=collision_key)
    del summary["best_collision_epoch"]  # = epochs_to_min_collision - 1
    epoch_seconds = [h["train/epoch_seconds"] for h in history]
    return {**summary, "train_seconds": seconds, "epoch_seconds": sum(epoch_seconds) / max(len(history), 1),
            "seconds_to_min_collision": sum(epoch_seconds[:summary["epochs_to_min_collision"]])}


def _usage_figure(codes: torch.Tensor, sizes, params: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    """Per-level codebook usage heatmap next to the tokens (when the rule asks for one)."""
    if "usage" in outputs:
        from hrq.quantize.plots import usage_heatmap

        usage_heatmap(codes.cpu(), sizes, outputs["usage"],
                      title=f"{params['method']} k={params['k']} s={params['s']} h={params['h']} seed {params['seed']}")


def tokenize_hierarchy(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Jointly train a node embedding and its (H)RQ on the train relations (paper §4.1)."""
    seed, k, s, h = params["seed"], params["k"], params["s"], params["h"]
    method, opts = params["method_spec"], params["tokenizer"]
    device = device_for(params)
    nodes = read_parquet(inputs["nodes"])
    rel = read_parquet(inputs["relations"])
    train = torch.tensor(rel.loc[rel["split"] == "train", ["child", "parent"]].to_numpy(), dtype=torch.long)
    test = torch.tensor(rel.loc[rel["split"] == "test", ["child", "parent"]].to_numpy(), dtype=torch.long)
    seed_everything(seed)
    quantizer = build_method_quantizer(method, k, s, h, {"commitment": opts["commitment"], "kmeans_init": True})
    # The embedding lives on the quantizer's own ball (one curvature, wherever it was configured).
    model = HierarchyTokenizer(len(nodes), h, quantizer=quantizer, init_scale=opts["init_scale"]).to(device)
    hyper = {"method": params["method"], "method_spec": method, "k": k, "s": s, "h": h, "seed": seed,
             "tokenizer": opts, "device": str(device), "train_relations": int(train.shape[0])}
    with job_run(params, hyper, datasets=inputs) as run:
        start = time.perf_counter()
        history = train_hierarchy_tokenizer(
            model, train, epochs=opts["epochs"], lr=opts["lr"], batch_size=opts["batch_size"],
            negatives=opts["negatives"], warmup_epochs=opts["warmup_epochs"], warmup_lr=opts["warmup_lr"],
            seed=seed, codebook_optimizer=method.get("codebook_optimizer"), on_epoch=epoch_logger(run, "tokenizer", opts["epochs"]),
        )
        seconds = time.perf_counter() - start
        codes = model.codes()
        groups = torch.tensor(nodes.sort_values("node_id")["top_level"].to_numpy(), dtype=torch.long)
        metrics = _diagnostics(codes, model.quantizer.codebook_sizes, groups)
        metrics.update(ranking_metrics(model, train, len(nodes)))
        # After training only: the test relations say what the embedding alone would score.
        metrics.update(embedding_oracle(model.embedding.detach(), model.ranking_scores, train, test))
        if model.ball is not None or model.tangent_ball is not None:  # HG-Rec: exp0 of its tangent vectors
            metrics.update(boundary_pinning(model.on_ball(model.embedding.detach()), model.curvature))
        metrics.update(_training_summary(history, "collision_rate", seconds))
        run.log_metrics({f"tokenizer/final/{key}": v for key, v in metrics.items()})
        _usage_figure(codes, model.quantizer.codebook_sizes, params, outputs)
        _write_tokens(append_dedup_token(codes), model.embedding, outputs["tokens"])
        write_parquet(metrics_frame(seed, metrics), outputs["metrics"])


def tokenize_items(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Train an (H)RQ-VAE on item embeddings (paper §4.2), or draw the Random baseline."""
    seed, k, s, h = params["seed"], params["k"], params["s"], params["h"]
    method, opts = params["method_spec"], params["tokenizer"]
    device = device_for(params)
    vectors = load_vectors(inputs["embeddings"]).to(device)
    items = read_parquet(inputs["catalog"]).sort_values("item_id")
    groups = torch.tensor(items["top_level"].to_numpy(), dtype=torch.long) if "top_level" in items else None
    seed_everything(seed)
    hyper = {"method": params["method"], "method_spec": method, "k": k, "s": s, "h": h, "seed": seed,
             "device": str(device), "items": int(vectors.shape[0]), "item_text": params.get("item_text")}
    if method["kind"] == "random":
        with job_run(params, hyper, datasets=inputs) as run:
            g = torch.Generator().manual_seed(seed)
            sizes = level_sizes(k, s)
            tokens = random_codes(vectors.shape[0], sizes, generator=g)
            metrics = _diagnostics(tokens[:, :k], sizes, groups)
            run.log_metrics({f"tokenizer/final/{key}": v for key, v in metrics.items()})
            _usage_figure(tokens[:, :k], sizes, params, outputs)
            _write_tokens(tokens, None, outputs["tokens"])
            write_parquet(metrics_frame(seed, metrics), outputs["metrics"])
        return

    model = build_vae(vectors.shape[1], h, k, s, method, opts).to(device)
    hyper["tokenizer"] = opts
    with job_run(params, hyper, datasets=inputs) as run:
        start = time.perf_counter()
        history = train_vae(model, vectors, epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                            seed=seed, kmeans_sample=opts.get("kmeans_sample"),
                            on_epoch=epoch_logger(run, "tokenizer", opts["epochs"]))
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            codes = model.encode(vectors)
            latent = model.to_latent(vectors)
            norms = model.latent_norms(vectors)
        metrics = _diagnostics(codes, model.quantizer.codebook_sizes, groups)
        metrics["reconstruction_loss"] = evaluate_vae(model, vectors)["reconstruction_loss"]
        metrics.update(norm_mean=float(norms.mean()), norm_std=float(norms.std()),
                       norm_cv=float(norms.std() / norms.mean()))
        metrics.update(_training_summary(history, "eval/collision_rate", seconds))
        ball = model.ball if model.ball is not None else model.quantizer.tangent_ball
        if ball is not None:  # the latent lives on the ball, or (HG-Rec) is compared there after exp0
            metrics.update(boundary_pinning(latent if model.ball is not None else ball.expmap0(latent), ball.c.item()))
        run.log_metrics({f"tokenizer/final/{key}": v for key, v in metrics.items()})
        _usage_figure(codes, model.quantizer.codebook_sizes, params, outputs)
        _write_tokens(append_dedup_token(codes), latent, outputs["tokens"])
        write_parquet(metrics_frame(seed, metrics), outputs["metrics"])
