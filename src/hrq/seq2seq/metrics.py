"""Ranking metrics for generated multitokens (one relevant item per query)."""

from __future__ import annotations

import torch


def rank_of(ranked: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """0-based position of ``truth`` in each query's ranking, ``-1`` when absent.

    Args:
        ranked: ``LongTensor [N, K, L]`` (e.g. from :func:`hrq.seq2seq.generate_ranked`).
        truth: ``LongTensor [N, L]``, in the same id space (token ids or codes).

    A hit needs ALL ``L`` tokens to match, the last (dedup) token included.

    Returns:
        ``LongTensor [N]``.
    """
    if ranked.dim() != 3 or truth.dim() != 2 or ranked.shape[0] != truth.shape[0] \
            or ranked.shape[2] != truth.shape[1]:
        raise ValueError(f"expected ranked [N, K, L] and truth [N, L], got {tuple(ranked.shape)} "
                         f"and {tuple(truth.shape)}")
    hit = (ranked == truth[:, None, :].to(ranked.device)).all(dim=-1)  # [N, K]
    first = hit.long().argmax(dim=1)
    return torch.where(hit.any(dim=1), first, torch.full_like(first, -1))


def _check(ranks: torch.Tensor, k: int) -> torch.Tensor:
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    ranks = torch.as_tensor(ranks)
    if ranks.numel() == 0:
        raise ValueError("no ranks to average")
    return ranks


def recall_at(ranks: torch.Tensor, k: int) -> float:
    """Share of queries whose truth is ranked in the top ``k`` (``0 <= rank < k``)."""
    ranks = _check(ranks, k)
    return float(((ranks >= 0) & (ranks < k)).float().mean())


def ndcg_at(ranks: torch.Tensor, k: int) -> float:
    """NDCG@k with one relevant item: mean of ``1 / log2(rank + 2)`` for ``0 <= rank < k``, else 0."""
    ranks = _check(ranks, k)
    hit = (ranks >= 0) & (ranks < k)
    gain = 1.0 / torch.log2(ranks.clamp(min=0).double() + 2.0)
    return float(torch.where(hit, gain, torch.zeros_like(gain)).mean())


def invalid_at(ranked: torch.Tensor, k: int) -> float:
    """Share of the first ``k`` returned slots that name no entity (``-1`` rows of
    :func:`hrq.seq2seq.generate_ranked`), averaged over queries: ``invalid@k``.

    Under free decoding these are the beams that are no existing entity's multitoken (TIGER's
    "invalid IDs"); under trie-constrained decoding only slots no valid beam filled, 0 unless
    fewer valid sequences than beams survive.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if ranked.dim() != 3 or ranked.shape[0] == 0:
        raise ValueError(f"expected ranked [N > 0, K, L], got {tuple(ranked.shape)}")
    if k > ranked.shape[1]:
        raise ValueError(f"invalid@{k} needs at least {k} returned slots, got {ranked.shape[1]}")
    return float((ranked[:, :k, 0] == -1).double().mean())
