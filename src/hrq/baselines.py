"""Reference points beside every table cell, so a reader can tell what drives a number.

* :func:`frequency_baseline` (Table 1): always answer the ``k`` hypernyms most frequent in the
  train relations. On WordNet's mammal subtree this alone reaches Recall@10 ≈ 0.6: the metric is
  dominated by frequent ancestors, hence also :func:`nonfrequent_mask` to score the rest.
* :func:`embedding_oracle` (Table 1): the tokenizer's continuous embedding before quantization,
  ranking candidate hypernyms by distance — what a perfect quantizer could keep.
* :func:`most_popular` (Table 2): the items with most train interactions, same list for all.
* :func:`boundary_pinning`: share of points stuck at the Poincaré ball's edge, where float32
  points collapse onto few codes.

All rankings reuse :func:`hrq.seq2seq.rank_of` on one-token "multitokens" (ids), so the hit rule
and the metric definitions are the ones of the models' cells.
"""

from __future__ import annotations

from typing import Callable

import torch

from hrq.manifold import BALL_EPS
from hrq.seq2seq.metrics import ndcg_at, rank_of, recall_at

__all__ = ["boundary_pinning", "embedding_oracle", "frequency_baseline", "most_frequent", "most_popular",
           "nonfrequent_mask", "ranking_metrics_of"]


def most_frequent(ids: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most frequent values of ``ids [N]``, most frequent first (ties: smaller id)."""
    values, counts = torch.unique(ids, return_counts=True)  # sorted by value
    order = torch.sort(counts, descending=True, stable=True).indices
    return values[order[:k]]


def ranking_metrics_of(ranked: torch.Tensor, truth: torch.Tensor, ks=(10,), ndcg: bool = False,
                       prefix: str = "") -> dict[str, float]:
    """Recall@k (and NDCG@k) of ``ranked [N, K]`` id lists against ``truth [N]``."""
    ranks = rank_of(ranked.unsqueeze(-1), truth.unsqueeze(-1))
    out = {}
    for k in ks:
        if ndcg:
            out[f"{prefix}ndcg@{k}"] = ndcg_at(ranks, k)
        out[f"{prefix}recall@{k}"] = recall_at(ranks, k)
    return out


def nonfrequent_mask(train_parents: torch.Tensor, test_parents: torch.Tensor, k: int = 10) -> torch.Tensor:
    """``BoolTensor [M]``: test pairs whose hypernym is not among the ``k`` most frequent train
    hypernyms — the part of Recall@k that always answering frequent ancestors cannot explain."""
    return ~torch.isin(test_parents, most_frequent(train_parents, k))


def frequency_baseline(train: torch.Tensor, test: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Recall@k on ``test [M, 2]`` (child, parent) of the constant answer "the ``k`` most frequent
    parents of ``train [E, 2]``", overall and on the non-frequent test pairs (0 by construction,
    reported so the column is complete); ``nonfrequent_share`` is that subset's size."""
    top = most_frequent(train[:, 1], k)
    ranked = top.unsqueeze(0).expand(test.shape[0], -1)
    out = ranking_metrics_of(ranked, test[:, 1], ks=(k,))
    mask = nonfrequent_mask(train[:, 1], test[:, 1], k)
    out[f"recall@{k}_nonfrequent"] = ranking_metrics_of(ranked[mask], test[mask, 1], ks=(k,))[f"recall@{k}"] \
        if bool(mask.any()) else float("nan")
    out["nonfrequent_share"] = float(mask.float().mean())
    return out


@torch.no_grad()
def embedding_oracle(embedding: torch.Tensor, scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     train: torch.Tensor, test: torch.Tensor, k: int = 10, batch_size: int = 1024) -> dict[str, float]:
    """Recall@k of ranking candidate hypernyms by distance in the continuous embedding.

    For each test pair (u, v) the candidates are every node that is a parent in the train
    relations (the hypernym vocabulary), u itself excluded; the ``k`` nearest to u are the
    answer. Also on the non-frequent test pairs (:func:`nonfrequent_mask`).

    Args:
        embedding: ``[n_nodes, h]`` points (Euclidean or on the ball).
        scores: ``scores(a [b, h], c [m, h]) -> [b, m]``, ordered as the embedding's distances
            within each row (e.g. :meth:`hrq.hierarchy.HierarchyTokenizer.ranking_scores`).
        train, test: ``LongTensor [E, 2]`` / ``[M, 2]`` (child, parent) pairs.
    """
    candidates = torch.unique(train[:, 1]).to(embedding.device)
    children, inverse = torch.unique(test[:, 0], return_inverse=True)
    top = []
    for start in range(0, children.numel(), batch_size):
        us = children[start : start + batch_size].to(embedding.device)
        d = scores(embedding[us], embedding[candidates])  # [b, c]
        d = d.masked_fill(candidates.unsqueeze(0) == us.unsqueeze(1), float("inf"))
        top.append(candidates[d.topk(min(k, candidates.numel()), dim=1, largest=False).indices].cpu())
    ranked = torch.cat(top)[inverse]
    out = ranking_metrics_of(ranked, test[:, 1], ks=(k,), prefix="oracle_")
    mask = nonfrequent_mask(train[:, 1], test[:, 1], k)
    if bool(mask.any()):
        out[f"oracle_recall@{k}_nonfrequent"] = ranking_metrics_of(ranked[mask], test[mask, 1], ks=(k,))[f"recall@{k}"]
    return out


def most_popular(train_items: torch.Tensor, targets: torch.Tensor, ks=(5, 10), prefix: str = "") -> dict[str, float]:
    """Recall/NDCG@k of recommending the items most frequent in ``train_items`` (every item
    of every user's train part, flattened) to everyone, against ``targets [U]``."""
    top = most_frequent(train_items, max(ks))
    return ranking_metrics_of(top.unsqueeze(0).expand(targets.shape[0], -1), targets, ks=ks, ndcg=True,
                              prefix=prefix)


def boundary_pinning(points: torch.Tensor, curvature: float = 1.0, eps: float | None = None) -> dict[str, float]:
    """``boundary_share``: share of points of the ball with ``1 − √c‖x‖ < eps``;
    ``max_norm_ratio``: the largest ``√c‖x‖`` (1 is the boundary).

    ``eps`` defaults to 1.5 × geoopt's projection margin for the points' dtype (4e-3 in float32,
    1e-5 in float64): the projection keeps every point that far from the boundary, so points
    pushed past it all sit at that radius (a smaller ``eps`` would never count a float32 point),
    where distinct directions are all that is left to tell them apart."""
    if eps is None:
        eps = 1.5 * BALL_EPS.get(points.dtype, BALL_EPS[torch.float32])
    scaled = points.detach().double().norm(dim=-1) * curvature ** 0.5
    return {"boundary_share": float((1 - scaled < eps).double().mean()), "max_norm_ratio": float(scaled.max())}
