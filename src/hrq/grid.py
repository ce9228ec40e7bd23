"""The tokenizer grid's codebook axis ``s``: codewords per level and the labels of result paths.

An ``s`` of the grid is either one int (every level has that many codewords) or one int per
level, a *codebook strategy* such as HG-Rec's differential-length ``[32, 64, 128]`` (§3.2).
Its label (:func:`codebook_label`) names it in result paths (``k3_s32-64-128_h32``) and in the
``s`` column of cells and tables. Torch-free, so the workflow can import it at start-up.
"""

from __future__ import annotations

import numbers
from typing import Sequence

__all__ = ["codebook_label", "grid_s", "level_sizes", "parse_codebook_label"]


def level_sizes(levels: int, codebook_size: int | str | Sequence[int]) -> list[int]:
    """Codewords per level: ``codebook_size`` repeated, or one positive int per level.

    Differential-length codebooks (HG-Rec §3.2), e.g. ``[64, 128, 256]``, are the list form;
    a label (``"64"``, ``"32-64-128"``, see :func:`codebook_label`) is read as what it names.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    sizes = parse_codebook_label(codebook_size)
    sizes = [sizes] * levels if isinstance(sizes, int) else sizes
    if len(sizes) != levels or any(s < 1 for s in sizes):
        raise ValueError(
            f"codebook_size must be a positive int or {levels} positive ints, got {codebook_size!r}"
        )
    return sizes


def _is_list(x) -> bool:
    """One size per level: a list, tuple or array, not a number or a label."""
    return not isinstance(x, (numbers.Number, str)) and hasattr(x, "__iter__")


def _size(x) -> int:
    """A codebook size from an integral number (``np.int64``, ``256.0`` from a float column);
    anything else, ``bool`` included, is an error."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or x != int(x):
        raise ValueError(f"a codebook size is a positive integer, got {x!r}")
    return int(x)


def codebook_label(codebook_size: int | str | Sequence[int]) -> str:
    """The grid label of a codebook strategy: ``64`` or ``[64, 64, 64]`` -> ``"64"``,
    ``[32, 64, 128]`` -> ``"32-64-128"`` (HG-Rec's differential-length codebooks). A label is
    returned in its canonical form (``"64-64-64"`` -> ``"64"``). This is the ``s`` of result
    paths and cells."""
    if isinstance(codebook_size, str):
        return codebook_label(parse_codebook_label(codebook_size))
    sizes = [_size(s) for s in codebook_size] if _is_list(codebook_size) else [_size(codebook_size)]
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"a codebook strategy is a positive int or a list of them, got {codebook_size!r}")
    return str(sizes[0]) if len(set(sizes)) == 1 else "-".join(map(str, sizes))


def parse_codebook_label(label: str | int | Sequence[int]) -> int | list[int]:
    """Inverse of :func:`codebook_label`: ``"64"`` -> ``64``, ``"32-64-128"`` -> ``[32, 64, 128]``
    (what :func:`level_sizes` takes). Numbers and lists pass through as ints."""
    if not isinstance(label, str):
        return [_size(s) for s in label] if _is_list(label) else _size(label)
    parts = label.split("-")
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"not a codebook strategy label (e.g. '64' or '32-64-128'): {label!r}")
    return int(parts[0]) if len(parts) == 1 else [int(p) for p in parts]


def grid_s(label: str) -> int | str:
    """The ``s`` a job and its MLflow cell are keyed by, from a path's label: an int for one size
    per level (as before per-level strategies existed, so those jobs and runs keep their
    identity), the label otherwise. A label not in canonical form (``64-64-64``, ``0256``) is
    an error rather than a second name for the same cell."""
    if codebook_label(label) != label:
        raise ValueError(f"codebook label {label!r} is not canonical; its path is s{codebook_label(label)}")
    sizes = parse_codebook_label(label)
    return sizes if isinstance(sizes, int) else label
