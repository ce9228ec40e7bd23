"""Data stages: parse/generate a dataset into Parquet; embed item texts.

Artifacts (schemas in docs/artifacts.md):

* hierarchy datasets (the synthetic tree, or WordNet's noun closure, see
  :mod:`hrq.data.wordnet`): ``nodes.parquet`` (node_id, name, depth, top_level) and
  ``relations.parquet`` (child, parent, split ∈ {train, test}) — the transitive closure
  with a seeded split, random (the paper's) or leak-free (``hierarchy.split``);
* recommendation datasets: ``items.parquet`` (item_id, raw_id, title, text, top_level),
  ``sequences.parquet`` (user_id, items: list of item_id in time order) and
  ``stats.parquet`` (users, items, interactions after the protocol's filtering);
* the item texts and ``embeddings/<dataset>.parquet`` are :mod:`hrq.stages.text`'s.
"""

from __future__ import annotations

import sys
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


SPLITS = ("random", "leak_free")  # hierarchy.split


def _draw_order(n_relations: int, seed: int) -> np.ndarray:
    """The seeded order in which relations are drawn for test (``int64 [E]``)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_relations, generator=g).numpy()


def split_relations(relations: torch.Tensor, test_fraction: float, seed: int, kind: str = "random") -> np.ndarray:
    """A seeded train/test label per relation of ``relations [E, 2]`` (``"train"``/``"test"``).

    ``kind`` (``hierarchy.split``): ``"random"``, the paper's, draws ``test_fraction`` of the
    closure uniformly; ``"leak_free"`` (:func:`leak_free_test`) only test pairs that cannot be
    re-derived by composing train pairs, starting from the same draw."""
    if kind == "random":
        test = np.zeros(relations.shape[0], dtype=bool)
        test[_draw_order(relations.shape[0], seed)[: int(round(test_fraction * relations.shape[0]))]] = True
    elif kind == "leak_free":
        test = leak_free_test(relations, test_fraction, seed)
    else:
        raise ValueError(f"hierarchy.split: {kind!r} is not one of {list(SPLITS)}")
    return np.where(test, "test", "train").astype(object)


def leak_free_test(relations: torch.Tensor, test_fraction: float, seed: int, tolerance: float = 0.01) -> np.ndarray:
    """``bool [E]`` test mask over ``relations [E, 2]`` (child, parent) such that no test pair
    is derivable from the others (:func:`hrq.baselines.derivable_mask`: its hypernym is not
    reachable from its child through train relations), about ``test_fraction`` of them.

    Candidates are drawn in the random split's seeded order, so the first batch is the paper's
    test set. A batch's derivable candidates go back to train, repeatedly: each pair moved back
    adds a train edge, which can make another candidate derivable, so this runs to a fixed
    point. A noun whose pairs would all be in test is trivially non-derivable yet has nothing
    to learn its embedding from, so it keeps one as train (:func:`_orphan_pairs`) within the
    same fixed point. Accepted pairs stay non-derivable whatever later batches take (taking
    pairs out of train only removes paths), so batches of the missing count follow until the
    test set is within ``tolerance`` of ``round(test_fraction × E)`` or every relation has been
    drawn (the result is then smaller; the baseline stage reports its size as ``test_share``)."""
    from hrq.baselines import derivable_mask, reachability

    n_pairs = relations.shape[0]
    n_nodes = int(relations.max()) + 1 if n_pairs else 0
    order, target = _draw_order(n_pairs, seed), int(round(test_fraction * n_pairs))
    test = np.zeros(n_pairs, dtype=bool)
    drawn = 0
    while target - test.sum() > tolerance * target and drawn < n_pairs:
        batch = order[drawn : drawn + target - int(test.sum())]
        drawn += batch.size
        test[batch] = True
        while True:
            candidates = batch[test[batch]]
            train = relations[torch.from_numpy(~test)]
            leaked = candidates[derivable_mask(train, relations[torch.from_numpy(candidates)],
                                               reachability(train, n_nodes)).numpy()]
            back = np.union1d(leaked, _orphan_pairs(relations, test, candidates))
            if back.size == 0:
                break
            test[back] = False
    return test


def _orphan_pairs(relations: torch.Tensor, test: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Indices (into ``relations [E, 2]``) of one candidate pair per child that ``test [E]``
    leaves without any train relation: the pair to its most general ancestor (most descendants
    in the closure, ties: smaller id), the least informative one (on WordNet, the root). Nothing
    is reachable from a root, so at most pairs (x, root) of nouns x below the child can become
    derivable, and the caller's fixed point returns those too."""
    pairs = relations.numpy()
    n_nodes = int(pairs.max()) + 1
    has_train = np.bincount(pairs[~test, 0], minlength=n_nodes) > 0
    mine = candidates[~has_train[pairs[candidates, 0]]]
    if mine.size == 0:
        return mine
    descendants = np.bincount(pairs[:, 1], minlength=n_nodes)
    child, parent = pairs[mine, 0], pairs[mine, 1]
    mine = mine[np.lexsort((parent, -descendants[parent], child))]
    child = pairs[mine, 0]
    return mine[np.r_[True, child[1:] != child[:-1]]]  # the first per child


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
    """Write a dataset's Parquet files. ``params``: ``{name, spec, task, test_fraction, split_seed, split}``
    (``split``: ``hierarchy.split``, see :func:`split_relations`),
    and for catalogs ``truncation`` (``recommendation.truncation``): under ``"input_only"`` the
    sequences keep whole histories (the protocol limits only the model inputs, and the stats
    count every interaction); under ``"before_split"`` (the default) histories are stored cut to
    their last ``max_length`` items."""
    spec = params["spec"]
    full_histories = params.get("truncation", "before_split") == "input_only"
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
                            "split": split_relations(relations, params["test_fraction"], params["split_seed"],
                                                     params.get("split", "random"))})
        n_test = int((rel["split"] == "test").sum())  # the leak-free split may fall short of test_fraction
        print(f"[hrq] {params.get('split', 'random')} split: {n_test:,} of {len(rel):,} relations in test "
              f"({n_test / max(len(rel), 1):.2%}; test_fraction {params['test_fraction']})", file=sys.stderr)
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
        items, seqs, counts = sequences_from_interactions(interactions, raw_items, min_length,
                                                          sys.maxsize if full_histories else max_length)
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
    kept = filter_and_truncate(sequences, min_length, sys.maxsize if full_histories else max_length)
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
