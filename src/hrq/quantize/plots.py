"""Codebook-usage heatmap: which codewords of each level the items use.

Built with matplotlib's object-oriented API on an Agg canvas (no pyplot state, no rcParams
changes) and written as PNG through :func:`hrq.io.atomic_output`, as :mod:`hrq.tables.figures`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hrq.io import atomic_output
from hrq.quantize.base import level_sizes

__all__ = ["usage_heatmap", "usage_matrix"]


def usage_matrix(codes: torch.Tensor, sizes: int | Sequence[int]) -> np.ndarray:
    """Share of items per (level, codeword): ``float [levels, max(sizes)]``, NaN where a level has
    fewer codewords than the largest one. Each row over its real codewords sums to 1."""
    if codes.ndim != 2 or codes.shape[0] == 0:
        raise ValueError(f"expected a non-empty code matrix [N, levels], got {tuple(codes.shape)}")
    levels = codes.shape[1]
    sizes = level_sizes(levels, sizes)
    codes = codes.detach().cpu().long()
    if (codes < 0).any() or any(int(codes[:, i].max()) >= s for i, s in enumerate(sizes)):
        raise ValueError(f"codes outside [0, size) for codebook sizes {sizes}")
    out = np.full((levels, max(sizes)), np.nan)
    for i, size in enumerate(sizes):
        counts = torch.bincount(codes[:, i], minlength=size).double()
        out[i, :size] = (counts / codes.shape[0]).numpy()
    return out


def usage_heatmap(
    codes: torch.Tensor,
    sizes: int | Sequence[int],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Write a PNG heatmap of codeword usage to ``path`` (atomically) and return ``path``.

    One row per level, one column per codeword (levels with fewer codewords than the largest are
    padded with blank cells), colour = share of the ``N`` items that take that codeword at that
    level. ``codes``: ``LongTensor [N, levels]``; ``sizes``: codewords per level (int or list).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    share = usage_matrix(codes, sizes)
    levels, width = share.shape
    fig = Figure(figsize=(min(12.0, 2.0 + 0.04 * width), 0.9 + 0.45 * levels))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(share), aspect="auto", interpolation="nearest",
                      cmap="viridis", vmin=0.0)
    ax.set_yticks(range(levels), [f"level {i}" for i in range(levels)])
    ax.set_xlabel("codeword")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of items")
    path = Path(path)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        fig.clear()
    return path
