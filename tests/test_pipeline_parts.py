"""The pieces the pipeline stages are made of: closure, split, protocol, hierarchy tokenizer."""

import math

import numpy as np
import pytest
import torch

from hrq.data import make_catalog, make_hierarchy, transitive_closure
from hrq.hierarchy import HierarchyTokenizer, RelationSampler, ranking_metrics, train_hierarchy_tokenizer
from hrq.recsys import filter_and_truncate, leave_one_out
from hrq.stages.data import split_relations


def test_transitive_closure_of_a_hand_built_tree():
    #      0
    #    1   2
    #   3 4    5
    #          6
    parent = torch.tensor([-1, 0, 0, 1, 1, 2, 5])
    pairs = {tuple(p) for p in transitive_closure(parent).tolist()}
    assert pairs == {(1, 0), (2, 0), (3, 1), (3, 0), (4, 1), (4, 0), (5, 2), (5, 0), (6, 5), (6, 2), (6, 0)}


def test_transitive_closure_rejects_cycles():
    with pytest.raises(ValueError, match="cycle"):
        transitive_closure(torch.tensor([1, 2, 0]))


@pytest.mark.parametrize("depth, branching", [(1, 2), (3, 3), (4, 4)])
def test_complete_tree_sizes(depth, branching):
    tree = make_hierarchy(depth, branching)
    n = sum(branching**level for level in range(depth + 1))
    assert len(tree.names) == n
    # every node at level l has exactly l ancestors
    expected_pairs = sum(level * branching**level for level in range(depth + 1))
    assert transitive_closure(tree.parent).shape == (expected_pairs, 2)
    assert int((tree.parent == -1).sum()) == 1 and int(tree.top_level[0]) == -1


def test_split_is_seeded_disjoint_and_sized():
    rel = transitive_closure(make_hierarchy(3, 4).parent)
    a = split_relations(rel, 0.15, seed=0)
    assert (a == split_relations(rel, 0.15, seed=0)).all()
    assert not (a == split_relations(rel, 0.15, seed=1)).all()
    assert int((a == "test").sum()) == round(0.15 * len(rel))
    assert set(a) == {"train", "test"}


def test_leave_one_out_on_a_hand_example():
    seqs = [[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11, 12, 13, 14]]
    split = leave_one_out(seqs, min_length=5, max_length=5)
    # user 0 truncated to its last 5: [2, 3, 4, 5, 6]; user 1 dropped (too short)
    assert split.users == 2
    assert split.test.histories == [[2, 3, 4, 5], [10, 11, 12, 13]]
    assert split.test.targets == [6, 14]
    assert split.valid.histories == [[2, 3, 4], [10, 11, 12]]
    assert split.valid.targets == [5, 13]
    assert list(zip(split.train.histories, split.train.targets)) == [
        ([2], 3), ([2, 3], 4), ([10], 11), ([10, 11], 12)]
    assert filter_and_truncate(seqs, 3, 2) == [[5, 6], [8, 9], [13, 14]]
    assert split.train_parts == [[2, 3, 4], [10, 11, 12]]
    assert leave_one_out(seqs, 5, 5, truncation="before_split") == split  # the default


def test_truncation_before_the_split_or_of_the_inputs_only():
    seq = [[1, 2, 3, 4, 5, 6, 7, 8], [20, 21, 22]]  # the second user is too short in both orders
    # before_split (App. B.2's order): cut to [4..8], then split; items 1-3 are never seen
    cut = leave_one_out(seq, min_length=5, max_length=5, truncation="before_split")
    assert cut.users == 1
    assert list(zip(cut.train.histories, cut.train.targets)) == [([4], 5), ([4, 5], 6)]
    assert (cut.valid.histories, cut.valid.targets) == ([[4, 5, 6]], [7])
    assert (cut.test.histories, cut.test.targets) == ([[4, 5, 6, 7]], [8])
    assert cut.train_parts == [[4, 5, 6]]
    # input_only: split the whole history; every input keeps its last 5 items
    inp = leave_one_out(seq, min_length=5, max_length=5, truncation="input_only")
    assert inp.users == 1
    assert list(zip(inp.train.histories, inp.train.targets)) == [
        ([1], 2), ([1, 2], 3), ([1, 2, 3], 4), ([1, 2, 3, 4], 5), ([1, 2, 3, 4, 5], 6)]
    assert (inp.valid.histories, inp.valid.targets) == ([[2, 3, 4, 5, 6]], [7])
    assert (inp.test.histories, inp.test.targets) == ([[3, 4, 5, 6, 7]], [8])
    assert inp.train_parts == [[1, 2, 3, 4, 5, 6]]
    # the held-out targets are the same; only what the model sees and trains on differs
    assert (inp.valid.targets, inp.test.targets) == (cut.valid.targets, cut.test.targets)
    # a history no longer than the limit splits the same way in both orders
    short = [[1, 2, 3, 4, 5]]
    assert leave_one_out(short, 5, 5, "input_only") == leave_one_out(short, 5, 5, "before_split")
    with pytest.raises(ValueError, match="truncation"):
        leave_one_out(seq, 5, 5, truncation="after_split")


@pytest.mark.parametrize("truncation, popular_hit", [("before_split", 0.0), ("input_only", 1.0)])
def test_most_popular_baseline_follows_the_recommenders_truncation(tmp_path, truncation, popular_hit):
    import pandas as pd

    from hrq.io import read_parquet, write_parquet
    from hrq.stages.downstream import baseline

    # Every user starts with item 7 three times, then 4 items of their own, then item 7 again
    # (the test target). Cut to the last 5 before the split, 7 is in no train part.
    users = [[7, 7, 7, 100 + u, 200 + u, 300 + u, 400 + u, 7] for u in range(12)]
    seqs = tmp_path / "sequences.parquet"
    write_parquet(pd.DataFrame({"user_id": [f"u{u}" for u in range(12)], "items": users}), seqs)
    out = tmp_path / "baseline.parquet"
    baseline({"sequences": str(seqs)}, {"baseline": str(out)},
             {"table": "table2", "min_length": 5, "max_length": 5, "truncation": truncation})
    metrics = read_parquet(out).set_index("metric")["value"]
    assert metrics["recall@5"] == popular_hit


def test_catalog_users_stay_in_their_subtree():
    cat = make_catalog(depth=3, branching=4, dim=16, users=50, stay_probability=1.0, seed=0)
    paths = cat.taxonomy.paths
    for seq in cat.sequences:
        assert 5 <= len(seq) <= 40
        assert len({tuple(paths[i, :2].tolist()) for i in seq}) == 1
    assert len(cat.texts) == paths.shape[0] and "category" in cat.texts[0]


def test_sampler_masks_true_hypernyms():
    rel = transitive_closure(make_hierarchy(2, 3).parent)
    sampler = RelationSampler(rel, 13, negatives=200, generators=[torch.Generator().manual_seed(0)], chunk_steps=2)
    true = {tuple(p) for p in rel.tolist()}
    for child, parent, neg, valid in sampler.batches(8):
        child, parent, neg, valid = child[0], parent[0], neg[0], valid[0]
        for i in range(child.numel()):
            for j in range(neg.shape[1]):
                u, v = int(child[i]), int(neg[i, j])
                bad = (u, v) in true or v == u or v == int(parent[i])
                assert bool(valid[i, j]) == (not bad)


@pytest.mark.parametrize("geometry", ["euclidean", "poincare"])
def test_hierarchy_tokenizer_learns(geometry):
    tree = make_hierarchy(3, 3)
    rel = transitive_closure(tree.parent)
    torch.manual_seed(0)
    model = HierarchyTokenizer(len(tree.names), 4, 2, 8, geometry=geometry)
    before = ranking_metrics(model, rel, len(tree.names))
    hist = train_hierarchy_tokenizer(model, rel, epochs=100, lr=1.0, batch_size=50, warmup_epochs=2,
                                     progress=False)
    after = ranking_metrics(model, rel, len(tree.names))
    assert hist[-1]["train/relation_loss"] < 0.8 * hist[0]["train/relation_loss"]
    assert after["map"] > before["map"] + 0.1
    assert torch.isfinite(model.embedding).all()
    if geometry == "poincare":
        assert float(model.embedding.detach().norm(dim=-1).max()) < 1.0
    assert model.multitokens().unique(dim=0).shape[0] == len(tree.names)


def test_ranking_metrics_of_a_perfect_embedding():
    # two chains 1->0 and 2->0: put each child next to its parent and far from the other
    model = HierarchyTokenizer(3, 2, 1, 2)
    with torch.no_grad():
        model.embedding.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.0], [-0.1, 0.0]]))
    rel = torch.tensor([[1, 0], [2, 0]])
    m = ranking_metrics(model, rel, 3)
    assert m == {"mean_rank": 1.0, "map": 1.0}
    with torch.no_grad():
        model.embedding.copy_(torch.tensor([[5.0, 0.0], [0.1, 0.0], [-0.1, 0.0]]))
    m = ranking_metrics(model, rel, 3)
    assert m["mean_rank"] == 2.0 and m["map"] == pytest.approx(0.5)
    assert np.isfinite(list(m.values())).all()


def test_tokenizer_diagnostics_without_ground_truth():
    from hrq.stages.tokenize import _diagnostics

    codes = torch.tensor([[0, 1], [0, 2], [1, 1]])
    unknown = _diagnostics(codes, [2, 3], torch.full((3,), -1))
    assert "first_token_purity" not in unknown and unknown["collision_rate"] == 0.0
    known = _diagnostics(codes, [2, 3], torch.tensor([5, 5, 6]))
    assert known["first_token_purity"] == 1.0


def test_select_lr_takes_the_best_mean_validation_metric():
    import pandas as pd

    from hrq.stages.report import select_lr

    rows = [(lr, seed, "valid/ndcg@10", v) for lr, seed, v in [
        ("0.001", 0, 0.30), ("0.001", 1, 0.10),   # mean 0.20
        ("0.0001", 0, 0.22), ("0.0001", 1, 0.22),  # mean 0.22: best although not the best seed
        ("1e-05", 0, 0.05), ("1e-05", 1, 0.07)]]
    rows += [("0.001", 0, "recall@10", 0.9)]  # other metrics play no part
    frame = pd.DataFrame(rows, columns=["lr", "seed", "metric", "value"])
    best, means = select_lr(frame, "valid/ndcg@10")
    assert best == "0.0001"
    assert means == pytest.approx({"0.001": 0.20, "0.0001": 0.22, "1e-05": 0.06})
    with pytest.raises(ValueError, match="valid/recall@5"):
        select_lr(frame, "valid/recall@5")


def test_movielens_stage_chain_with_template_descriptions(tmp_path):
    """prepare-data on a generated MovieLens zip, then describe-items (template backend)."""
    import pandas as pd

    from hrq.stages.data import prepare_data
    from hrq.stages.text import describe_items, text_summary

    data = tmp_path / "data"
    outputs = {"catalog": str(data / "items.parquet"), "sequences": str(data / "sequences.parquet"),
               "stats": str(data / "stats.parquet")}
    spec = {"kind": "movielens", "generate": {"users": 30, "movies": 20, "ratings_per_user_range": [3, 25],
                                              "seed": 1}, "max_length": 20}
    prepare_data({}, outputs, {"name": "ml", "spec": spec, "task": "recommendation", "raw_dir": str(tmp_path / "raw")})
    items = pd.read_parquet(outputs["catalog"])
    seqs = pd.read_parquet(outputs["sequences"])
    stats = pd.read_parquet(outputs["stats"]).iloc[0]
    assert list(items["item_id"]) == list(range(len(items)))
    lengths = seqs["items"].map(len)
    assert lengths.between(5, 20).all() and stats["users"] == len(seqs) < stats["users_raw"]
    assert stats["interactions"] == lengths.sum() and stats["items"] == len(items)
    assert not (tmp_path / "raw").exists()  # generated: nothing downloaded
    # recommendation.truncation: input_only stores whole histories (only model inputs are cut),
    # the same users and items, every interaction counted
    whole = {k: str(tmp_path / "whole" / v.rsplit("/", 1)[1]) for k, v in outputs.items()}
    spec_short = {**spec, "max_length": 8}
    prepare_data({}, whole, {"name": "ml", "spec": spec_short, "task": "recommendation",
                             "raw_dir": str(tmp_path / "raw"), "truncation": "input_only"})
    full = pd.read_parquet(whole["sequences"])
    assert full["user_id"].tolist() == seqs["user_id"].tolist()
    assert pd.read_parquet(whole["catalog"])["raw_id"].tolist() == items["raw_id"].tolist()
    assert full["items"].map(len).max() > 8
    assert [list(a[-8:]) for a in full["items"]] == [list(a[-8:]) for a in seqs["items"]]
    assert pd.read_parquet(whole["stats"]).iloc[0]["interactions"] == full["items"].map(len).sum()
    prepare_data({}, whole, {"name": "ml", "spec": spec_short, "task": "recommendation",
                             "raw_dir": str(tmp_path / "raw"), "truncation": "before_split"})
    assert pd.read_parquet(whole["sequences"])["items"].map(len).max() == 8

    out = tmp_path / "descriptions.parquet"
    describe_items({"catalog": outputs["catalog"]}, {"descriptions": str(out)},
                   {"spec": spec, "cache": str(tmp_path / "cache.parquet"),
                    "descriptions": {"backend": "template", "model": "unused", "max_concurrency": 1,
                                     "use_batches": False}})
    texts = pd.read_parquet(out)
    first = items.iloc[0]
    assert texts.iloc[0]["text"].startswith(first["title"].rsplit(" (", 1)[0] + " is a ")
    assert set(texts["source"]) == {"template"} and list(texts["item_id"]) == list(items["item_id"])
    assert text_summary(out) == f"template ({len(items):,} items: {len(items):,} ok)"


def test_taxonomy_embeddings_only_for_synthetic_catalogs():
    import yaml

    from hrq.config import ConfigError, resolve_config

    from pathlib import Path

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    config["presets"]["demo"]["recommendation"]["datasets"] = ["movielens_generated"]
    with pytest.raises(ConfigError, match="recommendation.embedding.backend: 'taxonomy'.*movielens_generated"):
        resolve_config(config)


def test_configured_methods_build_their_quantizers():
    from hrq.quantize import HGRecQuantizer, HyperVQQuantizer, ResidualQuantizer, RSQQuantizer
    from hrq.stages.common import build_method_quantizer, build_vae

    defaults = {"commitment": 0.3, "kmeans_init": False}
    rq = build_method_quantizer({"geometry": "euclidean"}, 2, 8, 4, defaults)
    assert isinstance(rq, ResidualQuantizer) and rq.geometry == "euclidean" and rq.commitment == 0.3
    hrq = build_method_quantizer({"geometry": "poincare", "curvature": 0.5, "residual": "gyro"}, 2, 8, 4, defaults)
    assert hrq.geometry == "poincare" and hrq.curvature == 0.5 and hrq.residual == "gyro"
    rsq = build_method_quantizer({"quantizer": "rsq"}, 2, 8, 4, defaults)  # no commitment term: not passed
    assert isinstance(rsq, RSQQuantizer)
    # The grid's s as a codebook strategy: per-level sizes, or their label as in result paths.
    pyramid = build_method_quantizer({"quantizer": "hgrec"}, 3, [4, 8, 16], 4, defaults)
    assert isinstance(pyramid, HGRecQuantizer) and pyramid.codebook_sizes == [4, 8, 16]
    labelled = build_method_quantizer({"geometry": "poincare"}, 3, "4-8-16", 4, defaults)
    assert labelled.codebook_sizes == [4, 8, 16]
    assert build_method_quantizer({"geometry": "euclidean"}, 3, "8", 4, defaults).codebook_sizes == [8, 8, 8]
    with pytest.raises(ValueError, match="does not accept option"):
        build_method_quantizer({"quantizer": "hgrec", "options": {"bogus": 1}}, 2, 8, 4, defaults)
    vae = build_vae(16, 4, 2, 8, {"kind": "vae", "quantizer": "hypervq_hrq"},
                    {"hidden_dims": [8], "commitment": 0.25, "kmeans_init": False})
    assert isinstance(vae.quantizer, HyperVQQuantizer) and vae.geometry == "poincare"


def test_hierarchy_tokenizer_takes_any_quantizer():
    from hrq.quantize import build_quantizer

    tree = make_hierarchy(2, 3)
    rel = transitive_closure(tree.parent)
    model = HierarchyTokenizer(len(tree.names), 4, quantizer=build_quantizer("hgrec", 2, 4, 4, kmeans_init=True))
    hist = train_hierarchy_tokenizer(model, rel, epochs=3, lr=1.0, warmup_epochs=1, progress=False)
    assert model.geometry == "euclidean" and all(np.isfinite(h["train/loss"]) for h in hist)
    assert model.codes().shape == (len(tree.names), 2)
    assert all(h["train/epoch_seconds"] > 0 for h in hist)
    # HG-Rec's embedding is a tangent vector measured like its codewords: d_B(exp0 a, exp0 b), c = 0.5
    model = HierarchyTokenizer(6, 4, quantizer=build_quantizer("hgrec", 2, 4, 4, curvature=0.5))
    a, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    ball = model.tangent_ball
    want = ball.dist(ball.expmap0(a)[:, None], ball.expmap0(b)[None])
    torch.testing.assert_close(model.distance(a[:, None], b[None]), want)
    assert torch.equal(model.ranking_scores(a, b).argsort(-1), want.argsort(-1))
    assert HierarchyTokenizer(6, 4, quantizer=build_quantizer("rq", 2, 4, 4)).tangent_ball is None
    # Tangent rows pushed past exp0's float32 reach are brought back to it; other rows, and
    # other tokenizers' embeddings, are not touched.
    with torch.no_grad():
        model.embedding[0] = torch.tensor([30.0, 0.0, 0.0, 0.0])
        model.embedding[1] = torch.tensor([0.0, 0.5, 0.0, 0.0])
    model.project_(torch.tensor([0, 1]))
    reach = math.atanh(1 - 4e-3) / 0.5**0.5
    assert model.embedding[0].norm().item() == pytest.approx(reach, rel=1e-5)
    assert model.embedding[1].tolist() == [0.0, 0.5, 0.0, 0.0]
    rq = HierarchyTokenizer(6, 4, quantizer=build_quantizer("rq", 2, 4, 4))
    with torch.no_grad():
        rq.embedding[0] = torch.tensor([30.0, 0.0, 0.0, 0.0])
    rq.project_(torch.tensor([0]))
    assert rq.embedding[0, 0].item() == 30.0


def test_hgrec_codebooks_stay_in_reach_with_their_own_optimizer():
    from hrq.quantize import build_quantizer

    tree = make_hierarchy(3, 3)
    rel = transitive_closure(tree.parent)
    reach = math.atanh(1 - 4e-3)
    norms = {}
    for name, opt in (("sgd", None), ("adam", {"kind": "adam", "lr": 1e-3})):
        torch.manual_seed(0)
        model = HierarchyTokenizer(len(tree.names), 4, quantizer=build_quantizer("hgrec", 2, 4, 4, kmeans_init=True))
        train_hierarchy_tokenizer(model, rel, epochs=15, lr=1.0, warmup_epochs=2, codebook_optimizer=opt,
                                  progress=False)
        norms[name] = max(float(b.detach().norm(dim=-1).median()) for b in model.quantizer.codebooks)
    # Plain SGD at lr 1.0 throws the tangent codewords past exp0's float32 reach; Adam does not.
    assert norms["sgd"] > reach > norms["adam"]
    with pytest.raises(ValueError, match="codebook_optimizer"):
        train_hierarchy_tokenizer(model, rel, epochs=1, lr=1.0, codebook_optimizer={"kind": "adam"}, progress=False)
    with pytest.raises(ValueError, match="quantizer.dim"):
        HierarchyTokenizer(5, 8, quantizer=build_quantizer("rq", 2, 4, 4))


@pytest.mark.parametrize("method", [
    {"geometry": "poincare", "options": {"curvature": 2.0}},   # curvature given only to the quantizer
    {"geometry": "poincare", "curvature": 2.0},
    {"quantizer": "hgrec", "options": {"curvature": 2.0}},      # tangent embedding, measured on c = 2
])
def test_hierarchy_embedding_lives_on_the_quantizers_ball(method):
    """One curvature: the node embedding takes its ball from the configured quantizer, exactly as
    the stage builds them, so codewords and the points they quantize share one geometry."""
    from hrq.stages.common import build_method_quantizer

    quantizer = build_method_quantizer(method, 2, 4, 4, {"commitment": 0.25, "kmeans_init": True})
    model = HierarchyTokenizer(6, 4, quantizer=quantizer)
    assert model.curvature == 2.0
    ball = model.ball if model.ball is not None else model.tangent_ball
    assert float(ball.c) == 2.0
    if model.ball is not None:  # the embedding's manifold is that ball: norms stay below 1/sqrt(2)
        assert float(model.embedding.manifold.c) == 2.0
        with torch.no_grad():
            model.embedding.copy_(model.embedding.manifold.projx(torch.full((6, 4), 10.0)))
        assert float(model.embedding.detach().norm(dim=-1).max()) < 2.0**-0.5
    with pytest.raises(ValueError, match="curvature=1.0 but quantizer"):
        HierarchyTokenizer(6, 4, quantizer=quantizer, curvature=1.0)


def test_a_method_cannot_set_an_option_twice():
    from hrq.stages.common import build_method_quantizer

    with pytest.raises(ValueError, match=r"\['curvature'\] twice.*curvature: 1.0 vs options.curvature: 2.0"):
        build_method_quantizer({"geometry": "poincare", "curvature": 1.0, "options": {"curvature": 2.0}},
                               2, 4, 4, {"commitment": 0.25})
    # The same value twice is no conflict.
    q = build_method_quantizer({"geometry": "poincare", "curvature": 2.0, "options": {"curvature": 2.0}},
                               2, 4, 4, {"commitment": 0.25})
    assert q.curvature == 2.0


@pytest.mark.parametrize("decoding", ["constrained", "free"])
def test_downstream_stages_log_invalid_at_10_in_both_decodings(tmp_path, decoding):
    """Both seq2seq stages on toy data with the disclosed options switched on: free or
    constrained decoding, TIGER's inverse-sqrt schedule, input-only truncation."""
    import numpy as np
    import pandas as pd

    from hrq.io import read_parquet, write_parquet
    from hrq.stages.downstream import hypernym_generation, recommendation

    torch.set_num_threads(1)
    g = np.random.default_rng(0)
    codes = np.stack([np.arange(24) // 6, np.arange(24) % 6, np.zeros(24, dtype=np.int64)], axis=1)
    tokens = tmp_path / "tokens.parquet"
    write_parquet(pd.DataFrame({"entity_id": np.arange(24), "codes": list(codes)}), tokens)
    seqs = tmp_path / "sequences.parquet"
    write_parquet(pd.DataFrame({"user_id": [f"u{u}" for u in range(10)],
                                "items": [g.integers(0, 24, size=8) for _ in range(10)]}), seqs)
    rel = tmp_path / "relations.parquet"
    write_parquet(pd.DataFrame({"child": np.arange(6, 24), "parent": np.arange(6, 24) // 6 - 1,
                                "split": ["train", "train", "test"] * 6}), rel)
    opts = {"d_model": 16, "d_ff": 32, "num_layers": 1, "num_heads": 2, "d_kv": 8, "dropout": 0.0, "epochs": 2,
            "batch_size": 16, "lr": 0.01, "num_beams": 10, "eval_every": 1, "decoding": decoding,
            "schedule": "inverse_sqrt", "warmup_steps": 3}
    out = tmp_path / "rec.parquet"
    recommendation({"tokens": str(tokens), "sequences": str(seqs)}, {"metrics": str(out)},
                   {"seed": 0, "seq2seq": opts, "device": "cpu", "selection": "valid/ndcg@10", "min_length": 5,
                    "max_length": 4, "truncation": "input_only"})
    rec = read_parquet(out).set_index("metric")["value"]
    out = tmp_path / "hyp.parquet"
    hypernym_generation({"tokens": str(tokens), "relations": str(rel)}, {"metrics": str(out)},
                        {"seed": 0, "seq2seq": opts, "device": "cpu"})
    hyp = read_parquet(out).set_index("metric")["value"]
    for value in (rec["invalid@10"], rec["valid/invalid@10"], hyp["invalid@10"]):
        assert 0.0 <= value <= 1.0
        if decoding == "constrained":  # 24 valid multitokens, 10 beams: every slot names one
            assert value == 0.0
    assert {"recall@10", "ndcg@10", "best_epoch"} <= set(rec.index) and "recall@10" in hyp.index
