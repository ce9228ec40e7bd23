"""Codebook diagnostics any stage can log: usage, perplexity and multitoken collisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class CodebookStats:
    """Diagnostics of a code matrix ``[N, levels]``.

    Attributes:
        usage: per level, the fraction of that level's codewords used at least once.
        perplexity: per level, ``exp(H)`` of the empirical code distribution (1 .. size).
        collision_rate: ``1 - unique multitokens / N`` (TIGER, LC-Rec, HG-Rec): the share of
            items that need the extra disambiguation token to be told apart.
        largest_collision_group: most items sharing one multitoken (1 when all are unique).
    """

    usage: tuple[float, ...]
    perplexity: tuple[float, ...]
    collision_rate: float
    largest_collision_group: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metric names for MLflow, e.g. ``usage/l0``, ``perplexity/l1``, ``collision_rate``."""
        out: dict[str, float] = {}
        for i, (u, p) in enumerate(zip(self.usage, self.perplexity)):
            out[f"{prefix}usage/l{i}"] = u
            out[f"{prefix}perplexity/l{i}"] = p
        out[f"{prefix}collision_rate"] = self.collision_rate
        out[f"{prefix}largest_collision_group"] = float(self.largest_collision_group)
        return out


def perplexity(codes: torch.Tensor, size: int) -> float:
    """``exp`` of the entropy of the code histogram of a 1-D code tensor."""
    p = torch.bincount(codes.reshape(-1), minlength=size).double()
    p = p / p.sum()
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))


def collision_groups(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Group ids ``[N]`` of identical rows of ``codes [N, levels]`` and each group's size."""
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return inverse, counts


def codebook_stats(codes: torch.Tensor, codebook_sizes: int | Sequence[int]) -> CodebookStats:
    """Compute :class:`CodebookStats` for ``codes [N, levels]``."""
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"expected a non-empty code matrix [N, levels], got {tuple(codes.shape)}")
    levels = codes.shape[1]
    sizes = [codebook_sizes] * levels if isinstance(codebook_sizes, int) else list(codebook_sizes)
    codes = codes.detach().cpu()
    usage = tuple(
        float(torch.unique(codes[:, i]).numel()) / sizes[i] for i in range(levels)
    )
    ppl = tuple(perplexity(codes[:, i], sizes[i]) for i in range(levels))
    _, counts = collision_groups(codes)
    n = codes.shape[0]
    return CodebookStats(usage, ppl, 1.0 - counts.numel() / n, int(counts.max()))


def first_token_purity(first_tokens: torch.Tensor, groups: torch.Tensor) -> float:
    """Share of entities whose ground-truth group is the majority group among entities with
    their first token: 1.0 when every first token stays inside one group (e.g. the top-level
    subtree of a synthetic taxonomy). ``first_tokens``, ``groups``: ``LongTensor [N]``."""
    hits = 0
    for t in first_tokens.unique():
        members = groups[first_tokens == t]
        hits += int(torch.bincount(members).max())
    return hits / first_tokens.numel()
