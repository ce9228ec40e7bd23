"""Baselines and diagnostics on hand-made data with known answers."""

import math
from pathlib import Path

import pytest
import torch

from hrq.baselines import (
    boundary_pinning,
    composition_baseline,
    derivable_mask,
    embedding_oracle,
    frequency_baseline,
    most_frequent,
    most_popular,
    nonfrequent_mask,
    reachability,
)
from hrq.data import make_hierarchy, transitive_closure
from hrq.stages.data import leak_free_test, split_relations


def test_most_frequent_orders_by_count_then_id():
    ids = torch.tensor([5, 3, 5, 7, 3, 5, 9, 7, 1])
    #  counts: 5→3, 3→2, 7→2, 9→1, 1→1
    assert most_frequent(ids, 3).tolist() == [5, 3, 7]
    assert most_frequent(ids, 10).tolist() == [5, 3, 7, 1, 9]


def test_frequency_baseline_by_hand():
    # train parents: 0 ×4, 1 ×3, 2 ×2, 3 ×1 → the 2 most frequent are {0, 1}
    train = torch.tensor([[10, 0], [11, 0], [12, 0], [13, 0], [10, 1], [11, 1], [12, 1], [10, 2], [11, 2], [10, 3]])
    test = torch.tensor([[14, 0], [14, 1], [15, 2], [16, 3]])  # hits: the first two
    out = frequency_baseline(train, test, k=2)
    assert out["recall@2"] == pytest.approx(0.5)
    assert out["recall@2_nonfrequent"] == 0.0  # by construction
    assert out["nonfrequent_share"] == pytest.approx(0.5)
    assert nonfrequent_mask(train[:, 1], test[:, 1], 2).tolist() == [False, False, True, True]


# A small DAG, edges (child, parent): a chain 0→1→2→3→4, a second parent 5 of 1 with 5→4,
# and 6→2. Node 0 reaches 1, 2, 3, 4 (four hops to 4) and 5 (through 1).
DAG = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [1, 5], [5, 4], [6, 2]])


def test_reachability_follows_any_number_of_hops():
    reach = reachability(DAG).toarray()
    assert reach.shape == (7, 7) and reach.dtype == bool
    assert {v for v in range(7) if reach[0, v]} == {1, 2, 3, 4, 5}
    assert {v for v in range(7) if reach[6, v]} == {2, 3, 4}
    assert not reach[4].any() and not reach[2, 1] and not reach[0, 0]  # upwards only, no self-loops
    assert reachability(DAG, n_nodes=9).shape == (9, 9)


def test_derivable_mask_by_hand():
    train = DAG[[0, 1, 2, 4, 5]]  # without 3→4 and 6→2
    test = torch.tensor([[0, 4], [0, 3], [1, 4], [2, 4], [6, 3], [3, 4]])
    # 0→4 through 1→5→4; 0→3 through 1→2→3; 1→4 through 5; 2→4 only via 3→4 (test); 6 has no train edge
    assert derivable_mask(train, test).tolist() == [True, True, True, False, False, False]
    assert derivable_mask(train, test[:0]).tolist() == []


def test_composition_baseline_ranks_by_frequency_ties_by_id_and_fills():
    # train hypernym counts: 9 ×3, 4 ×2, 3 ×2 (tie: 3 before 4), 2 ×1, 1 ×1, 8 ×1
    train = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [0, 3], [10, 9], [11, 9], [12, 9], [13, 4], [14, 8]])
    # node 0 reaches {1, 2, 3, 4}: ranked 3, 4, 1, 2 (1 before 2: tie by id)
    test = torch.tensor([[0, 3], [0, 4], [0, 1], [0, 2], [15, 9], [15, 3], [15, 8]])
    # k=2: node 0 answers [3, 4]; node 15 reaches nothing and gets the fill [9, 3]
    assert composition_baseline(train, test, k=2)["recall@2"] == pytest.approx(4 / 7)
    out = composition_baseline(train, test, k=3)
    # node 0: [3, 4, 1] → three hits; node 15 reaches nothing: the fill [9, 3, 4] → (15,9), (15,3)
    assert out["recall@3"] == pytest.approx(5 / 7)
    # non-derivable: (0,2)? 0→1→2 in train: derivable. (15, ·) all non-derivable: 2 of 3 hit by the fill
    assert out["nonderivable_share"] == pytest.approx(3 / 7)
    assert out["recall@3_nonderivable"] == pytest.approx(2 / 3)
    # node 0 with k=5 lists its 4 reachable nodes, then the most frequent one not listed yet (9)
    assert composition_baseline(train, torch.tensor([[0, 9]]), k=5)["recall@5"] == 1.0
    assert composition_baseline(train, torch.tensor([[0, 9]]), k=4)["recall@4"] == 0.0


def test_composition_is_unfiltered_and_beats_frequency_on_a_closure():
    rel = transitive_closure(make_hierarchy(4, 4).parent)  # 85 internal nodes, depth 4
    test_mask = split_relations(rel, 0.3, seed=0) == "test"
    train, test = rel[torch.from_numpy(~test_mask)], rel[torch.from_numpy(test_mask)]
    comp, freq = composition_baseline(train, test), frequency_baseline(train, test)
    assert comp["recall@10"] > freq["recall@10"] and comp["recall@10_nonfrequent"] > 0
    # A noun reaches at most its 4 ancestors, all listed (unfiltered), so every derivable test
    # pair is a hit and the rest is the non-derivable part.
    share = comp["nonderivable_share"]
    assert share == pytest.approx(float((~derivable_mask(train, test)).float().mean())) and 0 < share < 1
    assert comp["recall@10"] == pytest.approx(1 - share + share * comp["recall@10_nonderivable"])
    assert set(freq) >= {"recall@10_nonderivable", "recall@10_nonfrequent"}


def test_leak_free_split_has_no_derivable_test_pair_and_is_seeded():
    rel = transitive_closure(make_hierarchy(4, 3).parent)  # 360 pairs
    split = split_relations(rel, 0.15, seed=0, kind="leak_free")
    test = torch.from_numpy(split == "test")
    assert not derivable_mask(rel[~test], rel[test]).any()
    assert abs(int(test.sum()) - round(0.15 * len(rel))) <= 0.01 * 0.15 * len(rel)  # about test_fraction
    assert torch.isin(rel[test][:, 0], rel[~test][:, 0]).all()  # every test noun keeps a train relation
    assert (split == split_relations(rel, 0.15, seed=0, kind="leak_free")).all()
    assert not (split == split_relations(rel, 0.15, seed=1, kind="leak_free")).all()
    # the random split of the same seed leaks: it has derivable test pairs
    random = torch.from_numpy(split_relations(rel, 0.15, seed=0) == "test")
    assert derivable_mask(rel[~random], rel[random]).any()
    # the first candidates are the random split's: its non-derivable pairs stay in test
    # unless moving derivable ones back made them derivable
    assert bool((test & random).any())
    with pytest.raises(ValueError, match="hierarchy.split: 'nope'"):
        split_relations(rel, 0.15, seed=0, kind="nope")


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_leak_free_split_never_exceeds_its_target(fraction):
    # the closure of a chain 4→3→2→1→0 (10 pairs) and of a small tree, several seeds
    for rel in (transitive_closure(torch.tensor([-1, 0, 1, 2, 3])), transitive_closure(make_hierarchy(2, 4).parent)):
        for seed in range(4):
            test = torch.from_numpy(leak_free_test(rel, fraction, seed))
            assert 0 < int(test.sum()) <= round(fraction * len(rel))
            assert not derivable_mask(rel[~test], rel[test]).any()
            assert torch.isin(rel[test][:, 0], rel[~test][:, 0]).all()


def test_embedding_oracle_ranks_candidates_by_distance():
    # 1-d points; hypernym vocabulary = train parents {0, 1, 2}
    emb = torch.tensor([[0.0], [1.0], [5.0], [0.9], [4.8]])
    train = torch.tensor([[3, 0], [3, 1], [4, 2], [4, 0]])
    test = torch.tensor([[3, 1], [4, 2], [4, 1]])

    def dist(a, b):  # [b, h] x [m, h] -> [b, m]
        return (a.unsqueeze(1) - b.unsqueeze(0)).abs().sum(-1)

    out = embedding_oracle(emb, dist, train, test, k=1)
    # node 3 (0.9): nearest candidate 1 → hit; node 4 (4.8): nearest 2 → hit for (4,2), miss for (4,1)
    assert out["oracle_recall@1"] == pytest.approx(2 / 3)
    out2 = embedding_oracle(emb, dist, train, test, k=2)
    assert out2["oracle_recall@2"] == pytest.approx(1.0)  # node 4's top-2: {2, 1}


def test_embedding_oracle_never_answers_the_node_itself():
    emb = torch.tensor([[0.0], [0.1], [3.0]])
    train = torch.tensor([[1, 0], [0, 2]])  # candidates {0, 2}; node 0 is its own nearest
    test = torch.tensor([[0, 2]])
    out = embedding_oracle(emb, lambda a, b: (a.unsqueeze(1) - b.unsqueeze(0)).abs().sum(-1), train, test, k=1)
    assert out["oracle_recall@1"] == 1.0


def test_most_popular_by_hand():
    train_items = torch.tensor([4, 4, 4, 2, 2, 7])  # popularity: 4, 2, 7
    targets = torch.tensor([4, 2, 7, 9])
    out = most_popular(train_items, targets, ks=(1, 2))
    assert out["recall@1"] == pytest.approx(0.25) and out["recall@2"] == pytest.approx(0.5)
    # NDCG@2: ranks 0 and 1 → (1 + 1/log2(3)) / 4
    assert out["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 4)


def test_boundary_pinning():
    x = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.9995, 0.0], [0.0, -0.99999]])
    out = boundary_pinning(x, curvature=1.0, eps=1e-3)
    assert out["boundary_share"] == pytest.approx(0.5)
    assert out["max_norm_ratio"] == pytest.approx(0.99999)
    # curvature 4: the ball has radius 1/2, so 0.4995 is at the edge
    assert boundary_pinning(torch.tensor([[0.4995, 0.0]]), curvature=4.0)["boundary_share"] == 1.0


def test_a_baseline_is_shown_beside_every_cell_of_its_dataset(tmp_path):
    import pandas as pd

    from hrq.stages.common import metrics_frame
    from hrq.stages.report import render_table
    from hrq.tables.aggregate import aggregate_seeds

    cells = []
    for method, h, vals in [("rq", 4, [0.5, 0.7]), ("hrq", 4, [0.6, 0.8]), ("rq", 8, [0.4, 0.4]), ("hrq", 8, [0.5, 0.5])]:
        seeds = pd.concat([metrics_frame(s, {"recall@10": v, "tokenizer/oracle_recall@10": v + 0.1})
                           for s, v in enumerate(vals)])
        path = tmp_path / f"{method}_{h}.parquet"
        aggregate_seeds(seeds, {"table": "table1", "dataset": "toy", "method": method, "k": 3, "s": 16, "h": h}
                        ).to_parquet(path)
        cells.append(str(path))
    baseline = tmp_path / "toy.parquet"
    metrics_frame(0, {"recall@10": 0.25, "nonfrequent_share": 0.5}).assign(method="frequency").to_parquet(baseline)
    out = {ext: str(tmp_path / f"t1.{ext}") for ext in ("md", "csv", "parquet")}
    render_table({"cells": cells, "baselines": [str(baseline)]}, out, {
        "metrics": ["recall@10", "tokenizer/oracle_recall@10"],
        "metric_labels": {"tokenizer/oracle_recall@10": "embedding oracle recall@10"},
        "index": ["dataset", "k", "s", "h", "metric"], "methods": ["frequency", "rq", "hrq"],
        "compare": ["rq", "hrq"], "title": "t"})
    table = pd.read_parquet(out["parquet"])
    freq = table[table["method"] == "frequency"]
    assert sorted(freq["h"]) == [4, 8] and (freq["metric"] == "recall@10").all()  # one per row, no extras
    assert (freq["mean"] == 0.25).all() and (freq["n"] == 1).all()
    oracle = table[(table["metric"] == "embedding oracle recall@10") & (table["method"] == "hrq") & (table["h"] == 4)]
    assert float(oracle["mean"].iloc[0]) == pytest.approx(0.8)
    md = Path(out["md"]).read_text()
    assert "Frequency (baseline) mean ± std" in md and "25.00%" in md


def test_table_footnotes_state_each_datasets_split_numbers():
    import pandas as pd

    from hrq.stages.common import metrics_frame
    from hrq.stages.report import baseline_notes

    baselines = pd.concat([
        metrics_frame(0, {"recall@10": 0.4, "test_pairs": 981, "test_share": 0.15}).assign(method="frequency",
                                                                                           dataset="a"),
        metrics_frame(0, {"recall@10": 0.8, "nonderivable_share": 0.213}).assign(method="composition", dataset="a"),
        metrics_frame(0, {"recall@10": 0.5}).assign(method="frequency", dataset="b"),
    ])
    notes = [["test_pairs", "{:,.0f} test relations"], ["test_share", "{:.1%} of the closure"],
             ["nonderivable_share", "{:.1%} of them non-derivable from train"]]
    assert baseline_notes(baselines, notes) == ["a: 981 test relations, 15.0% of the closure, "
                                                "21.3% of them non-derivable from train."]
