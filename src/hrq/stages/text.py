"""Text stages of the recommendation datasets: item texts, then their embeddings.

* ``describe-items`` writes ``text/<dataset>/descriptions.parquet`` (item_id, raw_id, text,
  source, status, words): for MovieLens the LLM description of each movie
  (:func:`hrq.text.descriptions.describe_items`, answers cached across runs and presets in
  ``<results_dir>/cache/descriptions/<dataset>.parquet``) or the template sentence; for Amazon
  and the synthetic catalog the catalog's own text (``source = "metadata"``).
* ``embed-items`` writes ``embeddings/<dataset>.parquet`` (item_id, vector): sentence-transformers
  (MPNet) over those texts, or, for the synthetic catalog only, its generator's ground-truth
  vectors (``taxonomy``: a perfect text encoder for the built-in data).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from hrq.io import read_parquet, write_parquet

TEXT_COLUMNS = ["item_id", "raw_id", "text", "source", "status", "words"]


def describe_items(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """``params``: ``{spec, descriptions: {backend, model, max_concurrency, use_batches}, cache,
    tracking?}``. Only MovieLens items get generated descriptions; the paper embeds the
    catalog's own text for Amazon."""
    items = read_parquet(inputs["catalog"]).sort_values("item_id")
    if params["spec"]["kind"] == "movielens":
        from hrq.text.descriptions import describe_items as describe

        opts = params["descriptions"]
        described = describe(items, params["cache"], backend=opts["backend"], model=opts["model"],
                             max_concurrency=opts["max_concurrency"], use_batches=opts["use_batches"])
        source = (opts["backend"] if opts["backend"] == "template"
                  else f"{opts['backend']}:{opts['model']}:{described['prompt_hash'].iloc[0] if len(described) else ''}")
        frame = pd.DataFrame({"item_id": items["item_id"].to_numpy(), "raw_id": items["raw_id"].astype(str).to_numpy(),
                              "text": described["description"].to_numpy(), "source": source,
                              "status": described["status"].to_numpy(),
                              "words": described["words"].to_numpy(np.int64)})
    else:
        texts = items["text"].astype(str)
        frame = pd.DataFrame({"item_id": items["item_id"].to_numpy(), "raw_id": items["raw_id"].astype(str).to_numpy(),
                              "text": texts.to_numpy(), "source": "metadata", "status": "ok",
                              "words": texts.str.split().str.len().to_numpy(np.int64)})
    write_parquet(frame[TEXT_COLUMNS], outputs["descriptions"])


def text_summary(path) -> str:
    """One line on where a dataset's item texts come from, for table footnotes and MLflow."""
    frame = read_parquet(path, columns=["source", "status"])
    sources = ", ".join(sorted(frame["source"].unique()))
    counts = frame["status"].value_counts()
    detail = ", ".join(f"{counts[s]:,} {s}" for s in ("ok", "truncated", "empty") if s in counts)
    return f"{sources} ({len(frame):,} items: {detail})"


def embed_items(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Item embeddings. ``params``: ``{backend, spec, model?, batch_size?, precision?, device}``."""
    items = read_parquet(inputs["catalog"]).sort_values("item_id")
    backend = params["backend"]
    if backend == "taxonomy":
        from hrq.data import make_taxonomy

        spec = params["spec"]
        if spec["kind"] != "synthetic_catalog":
            raise ValueError(f"embedding backend 'taxonomy' needs a synthetic_catalog dataset, got {spec['kind']!r}; "
                             "use recommendation.embedding.backend: sentence-transformers")
        tax = make_taxonomy(spec["depth"], spec["branching"], spec["dim"],
                            leaves_per_node=spec["leaves_per_node"], seed=spec["seed"])
        vectors = tax.vectors.numpy().astype(np.float32)
        if vectors.shape[0] != len(items):
            raise ValueError(f"{inputs['catalog']}: {len(items)} items but the taxonomy has {vectors.shape[0]} leaves")
        write_parquet(pd.DataFrame({"item_id": items["item_id"].to_numpy(), "vector": list(vectors)}),
                      outputs["embeddings"])
    elif backend == "sentence-transformers":
        from hrq.stages.common import device_for
        from hrq.text.embeddings import embed_items as embed

        texts = read_parquet(inputs["descriptions"], columns=["item_id", "text"])
        embed(texts, outputs["embeddings"], model=params["model"], batch_size=params["batch_size"],
              device=str(device_for(params)), precision=params.get("precision", "float32"))
    else:
        raise ValueError(f"unknown embedding backend {backend!r}")
