"""Baselines and diagnostics on hand-made data with known answers."""

import math
from pathlib import Path

import pytest
import torch

from hrq.baselines import (
    boundary_pinning,
    embedding_oracle,
    frequency_baseline,
    most_frequent,
    most_popular,
    nonfrequent_mask,
)


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
