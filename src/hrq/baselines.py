"""Reference points beside every table cell, so a reader can tell what drives a number.

* :func:`frequency_baseline` (Table 1): always answer the ``k`` hypernyms most frequent in the
  train relations. On WordNet's mammal subtree this alone reaches Recall@10 ≈ 0.6: the metric is
  dominated by frequent ancestors, hence also :func:`nonfrequent_mask` to score the rest.
* :func:`composition_baseline` (Table 1): answer the hypernyms reachable from the noun through
  train relations (u→w, w→v in train gives u→v), most frequent first. The paper's split draws
  test pairs at random from the *transitive closure*, so most can be re-derived this way;
  :func:`derivable_mask` marks them, to score the rest (``recall@10_nonderivable``), and
  :func:`reachability` is the one computation both use.
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

import numpy as np
import torch
from scipy import sparse

from hrq.manifold import BALL_EPS
from hrq.seq2seq.metrics import ndcg_at, rank_of, recall_at

__all__ = ["boundary_pinning", "composition_baseline", "derivable_mask", "embedding_oracle", "frequency_baseline",
           "most_frequent", "most_popular", "nonfrequent_mask", "ranking_metrics_of", "reachability"]


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


def _subset_recall(ranked: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, k: int) -> float:
    """Recall@k of ``ranked [N, K]`` id lists against ``truth [N]`` on the rows where
    ``mask [N]`` holds; NaN when it holds nowhere (no such test pairs, not a score of 0)."""
    if not bool(mask.any()):
        return float("nan")
    return ranking_metrics_of(ranked[mask], truth[mask], ks=(k,))[f"recall@{k}"]


def _subset_recalls(ranked: torch.Tensor, train: torch.Tensor, test: torch.Tensor, k: int, prefix: str = "",
                    derivable: torch.Tensor | None = None) -> dict[str, float]:
    """Recall@k overall and on the non-frequent and non-derivable test pairs (the parts the
    frequency and composition baselines cannot score), for ``ranked [M, K]`` answers to
    ``test [M, 2]``; ``derivable``: :func:`derivable_mask` when already computed."""
    if derivable is None:
        derivable = derivable_mask(train, test)
    out = ranking_metrics_of(ranked, test[:, 1], ks=(k,), prefix=prefix)
    rare = nonfrequent_mask(train[:, 1], test[:, 1], k)
    out[f"{prefix}recall@{k}_nonfrequent"] = _subset_recall(ranked, test[:, 1], rare, k)
    out[f"{prefix}recall@{k}_nonderivable"] = _subset_recall(ranked, test[:, 1], ~derivable, k)
    return out


def frequency_baseline(train: torch.Tensor, test: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Recall@k on ``test [M, 2]`` (child, parent) of the constant answer "the ``k`` most frequent
    parents of ``train [E, 2]``", overall, on the non-frequent test pairs (0 by construction,
    reported so the column is complete) and on the non-derivable ones (:func:`derivable_mask`);
    ``nonfrequent_share`` is the non-frequent subset's size."""
    top = most_frequent(train[:, 1], k)
    ranked = top.unsqueeze(0).expand(test.shape[0], -1)
    out = _subset_recalls(ranked, train, test, k)
    out["nonfrequent_share"] = float(nonfrequent_mask(train[:, 1], test[:, 1], k).float().mean())
    return out


def _node_count(*pairs: torch.Tensor) -> int:
    return max((int(p.max()) + 1 for p in pairs if p.numel()), default=0)


def reachability(edges: torch.Tensor, n_nodes: int | None = None) -> sparse.csr_array:
    """``bool [n_nodes, n_nodes]`` sparse matrix: ``[u, v]`` holds when v is reachable from u
    along ``edges [E, 2]`` (child, parent) in one or more hops.

    Repeated squaring, R ← R ∨ R·R until no pair is added: ⌈log2(longest path)⌉ + 1 sparse
    products. Through relations drawn from a transitive closure, R is a subset of that closure
    (u's reachable nodes are some of its ancestors), so on WordNet's 743k pairs each product
    costs about |closure| × ancestors per noun and the whole takes about a second."""
    n = _node_count(edges) if n_nodes is None else n_nodes
    e = edges.cpu().numpy()
    reach = sparse.csr_array((np.ones(e.shape[0], dtype=np.int32), (e[:, 0], e[:, 1])), shape=(n, n))
    reach.sum_duplicates()
    reach.data[:] = 1
    while True:
        grown = reach + reach @ reach  # path counts; only their support matters
        grown.data[:] = 1
        grown.eliminate_zeros()
        if grown.nnz == reach.nnz:
            return reach.astype(bool)
        reach = grown


def derivable_mask(train: torch.Tensor, test: torch.Tensor,
                   reach: sparse.csr_array | None = None) -> torch.Tensor:
    """``BoolTensor [M]``: test pairs (u, v) of ``test [M, 2]`` whose hypernym v is reachable from
    u through the ``train [E, 2]`` relations (composing u→w, w→v, any number of hops), i.e. that
    a model can re-derive from train pairs without generalising. ``reach``: a precomputed
    :func:`reachability` of ``train`` covering every id of ``test``."""
    if test.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    if reach is None:
        reach = reachability(train, _node_count(train, test))
    t = np.array(test.cpu().numpy())  # an owned copy: scipy's indexing rejects torch-backed views
    return torch.from_numpy(np.asarray(reach[t[:, 0], t[:, 1]]).ravel().astype(bool))


def composition_baseline(train: torch.Tensor, test: torch.Tensor, k: int = 10) -> dict[str, float]:
    """Recall@k on ``test [M, 2]`` of answering, for a test noun u, the nodes reachable from u
    through ``train [E, 2]`` (any number of hops), most frequent train hypernym first (ties:
    smaller id), filled up to ``k`` with the most frequent train hypernyms not yet listed.

    Unfiltered, like the models' beams: u's own train hypernyms may take slots. Also on the
    non-frequent and non-derivable test pairs (on the latter only the fill can hit);
    ``nonderivable_share`` is the share of test pairs not derivable from train
    (:func:`derivable_mask`)."""
    n = _node_count(train, test)
    reach = reachability(train, n)
    children, inverse = torch.unique(test[:, 0], return_inverse=True)
    freq = np.bincount(train[:, 1].cpu().numpy(), minlength=n)
    rows = reach[np.array(children.numpy())].tocoo()  # row i: the nodes reachable from children[i]
    order = np.lexsort((rows.col, -freq[rows.col], rows.row))  # by row, then frequency, then id
    row, col = rows.row[order], rows.col[order]
    position = np.arange(row.size) - np.searchsorted(row, row)  # rank within the row
    ranked = np.full((children.numel(), k), -1, dtype=np.int64)  # -1: an empty slot, never a hit
    kept = position < k
    ranked[row[kept], position[kept]] = col[kept]
    # Fill: a row holds at most k - 1 reachable nodes when it needs filling, so the 2k - 1 most
    # frequent hypernyms always hold k it does not list yet.
    top = most_frequent(train[:, 1], 2 * k - 1).cpu().numpy()
    fresh = ~(top[None, :, None] == ranked[:, None, :]).any(-1)  # [children, 2k - 1]
    slot = np.minimum(np.bincount(row, minlength=children.numel()), k)[:, None] + np.cumsum(fresh, axis=1) - 1
    r, g = np.nonzero(fresh & (slot < k))
    ranked[r, slot[r, g]] = top[g]
    derivable = derivable_mask(train, test, reach)
    out = _subset_recalls(torch.from_numpy(ranked)[inverse], train, test, k, derivable=derivable)
    out["nonderivable_share"] = float((~derivable).float().mean())
    return out


@torch.no_grad()
def embedding_oracle(embedding: torch.Tensor, scores: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     train: torch.Tensor, test: torch.Tensor, k: int = 10, batch_size: int = 1024) -> dict[str, float]:
    """Recall@k of ranking candidate hypernyms by distance in the continuous embedding.

    For each test pair (u, v) the candidates are every node that is a parent in the train
    relations (the hypernym vocabulary), u itself excluded; the ``k`` nearest to u are the
    answer. Also on the non-frequent and the non-derivable test pairs (:func:`nonfrequent_mask`,
    :func:`derivable_mask`; NaN when there are none).

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
    return _subset_recalls(ranked, train, test, k, prefix="oracle_")


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
