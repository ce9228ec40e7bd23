"""Multitoken helpers: the extra disambiguation token and the paper's random baseline."""

from __future__ import annotations

from typing import Sequence

import torch

from hrq.quantize.metrics import collision_groups


def append_dedup_token(codes: torch.Tensor) -> torch.Tensor:
    """Append one token that makes every multitoken unique (the paper's and TIGER's extra token).

    The extra token is the item's index within its collision group, in row order: ``0`` for
    the first (or only) item with a multitoken, ``1`` for the second, and so on.

    Args:
        codes: ``LongTensor [N, levels]``.

    Returns:
        ``LongTensor [N, levels + 1]`` whose rows are pairwise distinct.
    """
    if codes.ndim != 2:
        raise ValueError(f"expected codes [N, levels], got {tuple(codes.shape)}")
    n = codes.shape[0]
    if n == 0:
        return codes.new_zeros((0, codes.shape[1] + 1))
    group, _ = collision_groups(codes)
    order = torch.sort(group, stable=True).indices  # rows grouped, row order kept inside groups
    sorted_group = group[order]
    position = torch.arange(n, device=codes.device)
    is_start = torch.ones(n, dtype=torch.bool, device=codes.device)
    is_start[1:] = sorted_group[1:] != sorted_group[:-1]
    group_start = torch.cummax(torch.where(is_start, position, 0), dim=0).values
    extra = torch.empty(n, dtype=codes.dtype, device=codes.device)
    extra[order] = position - group_start
    return torch.cat([codes, extra.unsqueeze(-1)], dim=-1)


def random_codes(
    n: int,
    codebook_size: int | Sequence[int],
    levels: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's Random baseline: uniform random tokens per level plus the extra token.

    Args:
        n: number of items.
        codebook_size: codewords per level, an int (then ``levels`` is required) or one per level.
        levels: number of levels when ``codebook_size`` is an int.
        generator: for reproducible draws.

    Returns:
        ``LongTensor [n, levels + 1]``, unique rows.
    """
    if isinstance(codebook_size, int):
        if levels is None:
            raise ValueError("levels is required when codebook_size is an int")
        sizes = [codebook_size] * levels
    else:
        sizes = list(codebook_size)
    cols = [torch.randint(s, (n,), generator=generator) for s in sizes]
    return append_dedup_token(torch.stack(cols, dim=-1))
