"""Data stages: parse/generate a dataset into Parquet; embed item texts.

Artifacts (schemas in docs/artifacts.md):

* hierarchy datasets (the synthetic tree, or WordNet's noun closure, see
  :mod:`hrq.data.wordnet`): ``nodes.parquet`` (node_id, name, depth, top_level) and
  ``relations.parquet`` (child, parent, split ∈ {train, test}) — the transitive closure
  with a seeded random split;
* recommendation datasets: ``items.parquet`` (item_id, raw_id, title, text, top_level),
  ``sequences.parquet`` (user_id, items: list of item_id in time order) and
  ``stats.parquet`` (users, items, interactions after the protocol's filtering);
* the item texts and ``embeddings/<dataset>.parquet`` are :mod:`hrq.stages.text`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from hrq.data import make_catalog, make_hierarchy, transitive_closure
from hrq.io import read_parquet, write_parquet
from hrq.recsys import filter_and_truncate

HIERARCHY_KINDS = {"synthetic_taxonomy", "wordnet"}
INTERACTION_KINDS = ("movielens", "amazon2014", "amazon2018", "yelp")  # raw interactions -> protocol
CATALOG_KINDS = {"synthetic_catalog", *INTERACTION_KINDS}


def split_relations(relations: torch.Tensor, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded random train/test label per relation (``"train"``/``"test"``)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(relations.shape[0], generator=g)
    n_test = int(round(test_fraction * relations.shape[0]))
    split = np.full(relations.shape[0], "train", dtype=object)
    split[perm[:n_test].numpy()] = "test"
    return split


def _wordnet(spec: Mapping[str, Any], workdir: Path) -> tuple[list[str], torch.Tensor, np.ndarray]:
    """WordNet noun closure (or the subtree under ``spec['root']``) as node names, relation
    ids ``[E, 2]`` and each noun's minimum depth below entity.n.01."""
    from hrq.data.wordnet import noun_closure, open_wordnet, subtree

    wn = open_wordnet(spec.get("dict_dir"), workdir)
    pairs = noun_closure(wn)
    if spec.get("root"):
        pairs = subtree(pairs, spec["root"])
    names = sorted({name for pair in pairs for name in pair})
    index = {name: i for i, name in enumerate(names)}
    relations = torch.tensor([[index[c], index[p]] for c, p in pairs], dtype=torch.long)
    depth = np.array([wn.synset(name).min_depth() for name in names], dtype=np.int64)
    return names, relations, depth


def _movielens(spec: Mapping[str, Any], raw_dir: Path, data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, interactions) of a MovieLens-10M-format zip: ``spec['zip']`` as given, a
    generated one (``spec['generate']``: arguments of :func:`generate_movielens`), or the real
    ml-10m.zip, downloaded (md5-checked) into ``raw_dir/movielens``."""
    from hrq.data.movielens import fetch_movielens, generate_movielens, read_movielens

    if spec.get("zip"):
        path = Path(spec["zip"])
        if not path.is_file():
            raise FileNotFoundError(f"datasets.<movielens>.zip: {path} does not exist")
    elif spec.get("generate"):
        gen = dict(spec["generate"])
        if "ratings_per_user_range" in gen:
            gen["ratings_per_user_range"] = tuple(gen["ratings_per_user_range"])
        path = generate_movielens(data_dir / "ml-generated.zip", **gen)
    else:
        path = fetch_movielens(raw_dir / "movielens")
    items, interactions = read_movielens(path)
    return items.assign(text=items["title"]), interactions


def _amazon(spec: Mapping[str, Any], raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, interactions) of one Amazon 2014 5-core category: ``spec['reviews']`` and
    ``spec['meta']`` as given, else downloaded into ``raw_dir/amazon2014``."""
    from hrq.data.amazon import fetch_amazon, read_amazon

    if spec.get("reviews") or spec.get("meta"):
        reviews, meta = Path(spec["reviews"]), Path(spec["meta"])
    else:
        reviews, meta = fetch_amazon(spec["category"], raw_dir / "amazon2014")
    return read_amazon(reviews, meta)


def prepare_data(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Write a dataset's Parquet files. ``params``: ``{name, spec, task, test_fraction, split_seed}``."""
    spec = params["spec"]
    kind = spec["kind"]
    if params["task"] == "hierarchy":
        if kind == "synthetic_taxonomy":
            tree = make_hierarchy(spec["depth"], spec["branching"])
            names = tree.names
            depth, top = tree.depth.numpy(), tree.top_level.numpy()
            relations = transitive_closure(tree.parent)
        elif kind == "wordnet":
            names, relations, depth = _wordnet(spec, Path(outputs["nodes"]).parent / "wordnet_dict")
            top = np.full(len(names), -1)
        else:
            raise ValueError(f"dataset {params['name']!r}: kind {kind!r} is not a hierarchy dataset")
        nodes = pd.DataFrame({"node_id": np.arange(len(names), dtype=np.int64), "name": names,
                              "depth": depth.astype(np.int64), "top_level": top.astype(np.int64)})
        rel = pd.DataFrame({"child": relations[:, 0].numpy(), "parent": relations[:, 1].numpy(),
                            "split": split_relations(relations, params["test_fraction"], params["split_seed"])})
        write_parquet(nodes, outputs["nodes"])
        write_parquet(rel, outputs["relations"])
        return

    if kind == "synthetic_catalog":
        cat = make_catalog(spec["depth"], spec["branching"], spec["dim"],
                           leaves_per_node=spec["leaves_per_node"], users=spec["users"],
                           min_length=spec["min_length"], max_length=spec["max_length"],
                           stay_probability=spec["stay_probability"], seed=spec["seed"])
        n = len(cat.titles)
        items = pd.DataFrame({"item_id": np.arange(n, dtype=np.int64), "raw_id": [f"synthetic-{i}" for i in range(n)],
                              "title": cat.titles, "text": cat.texts,
                              "top_level": cat.taxonomy.top_level.numpy().astype(np.int64)})
        sequences = cat.sequences
        min_length, max_length = spec["min_length"], spec["max_length"]
    elif kind in INTERACTION_KINDS:
        from hrq.data.interactions import sequences_from_interactions

        raw_dir = Path(params["raw_dir"])
        if kind == "movielens":
            raw_items, interactions = _movielens(spec, raw_dir, Path(outputs["catalog"]).parent)
        elif kind == "amazon2014":
            raw_items, interactions = _amazon(spec, raw_dir)
        elif kind == "amazon2018":  # HG-Rec's Instruments: placed by hand, iterative 5-core
            from hrq.data.amazon2018 import amazon2018_paths, read_amazon2018

            raw_items, interactions = read_amazon2018(*amazon2018_paths(raw_dir / "amazon2018", spec["category"]))
        else:  # yelp: HG-Rec's 2019 reviews; the user accepts Yelp's licence and places the files
            from hrq.data.yelp import read_yelp, yelp_paths

            raw_items, interactions = read_yelp(*yelp_paths(raw_dir / "yelp"), year=spec.get("year", 2019))
        min_length, max_length = spec.get("min_length", 5), spec.get("max_length", 20)
        items, seqs, counts = sequences_from_interactions(interactions, raw_items, min_length, max_length)
        items = items.assign(top_level=np.int64(-1))  # no ground-truth hierarchy
        stats = pd.DataFrame({"dataset": [params["name"]], "users": [counts["users"]], "items": [counts["items"]],
                              "interactions": [counts["interactions"]],
                              "interactions_raw": [counts["interactions_raw"]], "users_raw": [counts["users_raw"]]})
        write_parquet(items, outputs["catalog"])
        write_parquet(seqs, outputs["sequences"])
        write_parquet(stats, outputs["stats"])
        return
    else:
        raise ValueError(f"dataset {params['name']!r}: kind {kind!r} is not a recommendation dataset")
    seqs = pd.DataFrame({"user_id": [f"u{i}" for i in range(len(sequences))], "items": sequences})
    kept = filter_and_truncate(sequences, min_length, max_length)
    stats = pd.DataFrame({"dataset": [params["name"]], "users": [len(kept)], "items": [len(items)],
                          "interactions": [sum(map(len, kept))],
                          "interactions_raw": [sum(map(len, sequences))]})
    write_parquet(items, outputs["catalog"])
    write_parquet(seqs, outputs["sequences"])
    write_parquet(stats, outputs["stats"])


def load_vectors(path) -> torch.Tensor:
    """``[n_items, d]`` float32 from an embeddings Parquet (rows ordered by item_id)."""
    df = read_parquet(path).sort_values("item_id")
    return torch.from_numpy(np.stack(df["vector"].to_numpy()).astype(np.float32))
