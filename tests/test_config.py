"""Config resolution and validation: presets, user overrides, errors that name the key."""

import subprocess
import sys
from pathlib import Path

import pytest

import yaml

from hrq.config import CONFIG_PATH, ConfigError, load_config, resolve_config

REPO = Path(__file__).resolve().parents[1]


def test_default_is_demo_and_paper_is_the_protocol():
    demo = load_config()
    assert demo["preset"] == "demo"
    assert demo["device"] == "cpu" and len(demo["seeds"]) >= 2
    assert demo["hierarchy"]["datasets"] == ["synthetic_taxonomy"]
    paper = load_config(preset="paper")
    assert paper["seeds"] == list(range(8))
    assert paper["hierarchy"]["grid"] == {"k": [3, 4], "s": [64, 128, 256], "h": [4, 8, 16, 32]}
    assert paper["hierarchy"]["tokenizer"]["epochs"] == 1500
    assert paper["hierarchy"]["tokenizer"]["warmup_epochs"] == 20
    assert paper["recommendation"]["tokenizer"]["hidden_dims"] == [512, 256, 128]
    assert paper["recommendation"]["grid"] == {"k": [3], "s": [256], "h": [32]}


def test_user_overrides_beat_the_preset():
    cfg = load_config(device="auto", hierarchy={"grid": {"h": [2]}})
    assert cfg["device"] == "auto"  # demo sets cpu
    assert cfg["hierarchy"]["grid"] == {"k": [3], "s": [16], "h": [2]}  # only h replaced


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"preset": "nope"}, "preset: 'nope' is not a defined preset"),
        ({"hierarchy": {"grid": {"k": [0]}}}, "hierarchy.grid.k[0]"),
        ({"seeds": []}, "seeds"),
        ({"device": "tpu"}, "device"),
        ({"bogus": 1}, "'bogus' was unexpected"),
        ({"hierarchy": {"compare": ["rq", "foo"]}}, "hierarchy.compare[1]: method 'foo'"),
        ({"recommendation": {"datasets": ["missing"]}}, "recommendation.datasets[0]: dataset 'missing'"),
        ({"hierarchy": {"methods": {"hrq": {"geometry": "sphere"}}}}, "hierarchy.methods.hrq.geometry"),
        ({"recommendation": {"seq2seq": {"num_beams": 5}}}, "recommendation.seq2seq.num_beams"),
        ({"hierarchy": {"figure1": {"k": 7}}}, "hierarchy.figure1.k: 7 is not in hierarchy.grid.k"),
    ],
)
def test_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(**overrides)
    assert key in str(err.value)


def test_a_preset_cannot_select_another_preset():
    raw = {**load_config(), "presets": {"x": {"preset": "demo"}}, "preset": "x"}
    with pytest.raises(ConfigError, match="presets.x.preset"):
        resolve_config(raw)


def test_snakemake_reports_the_bad_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "all_tables", "--cores", "1",
         "--config", "threads=0", "--directory", str(tmp_path), "--snakefile", str(REPO / "Snakefile")],
        cwd=REPO, capture_output=True, text=True, timeout=1800,  # hang guard only
    )
    assert proc.returncode != 0
    assert "threads: 0 is less than the minimum of 1" in proc.stdout + proc.stderr


def test_a_preset_extends_another_and_cycles_are_errors():
    config = load_config(preset="related_demo")
    demo = load_config(preset="demo")
    assert config["seeds"] == demo["seeds"] and config["device"] == demo["device"]  # from demo
    assert {"hgrec", "hypervq", "hypervq_hrq", "rsqvae", "rqvae"} <= set(config["recommendation"]["methods"])
    raw = yaml.safe_load(CONFIG_PATH.read_text())
    raw["presets"]["demo"]["extends"] = "related_demo"
    with pytest.raises(ConfigError, match="cycle related_demo -> demo -> related_demo"):
        resolve_config({**raw, "preset": "related_demo"})
    raw["presets"]["demo"]["extends"] = "nope"
    with pytest.raises(ConfigError, match="presets.demo.extends: 'nope' is not a defined preset"):
        resolve_config({**raw, "preset": "demo"})


def test_codebook_strategies_in_the_grid_are_checked_against_k():
    raw = yaml.safe_load(CONFIG_PATH.read_text())
    with pytest.raises(ConfigError, match=r"recommendation.grid.s\[1\]: \[64, 128, 256\] has 3 levels, but "
                                          r"recommendation.grid.k is \[4\]"):
        resolve_config({**raw, "preset": "related"}, {"recommendation": {"grid": {"k": [4]}}})
    with pytest.raises(ConfigError, match=r"hierarchy.grid.s\[1\]: \[8, 8, 8\] is the same codebook strategy as "
                                          r"hierarchy.grid.s\[0\]"):
        resolve_config({**raw, "preset": "demo"}, {"hierarchy": {"grid": {"k": [3], "s": [8, [8, 8, 8]]}}})
    with pytest.raises(ConfigError, match=r"recommendation.grid.s\[1\]\[0\]: 0 is less than the minimum of 1"):
        resolve_config({**raw, "preset": "demo"}, {"recommendation": {"grid": {"s": [16, [0, 16]]}}})
    cfg = resolve_config({**raw, "preset": "hgrec_ablation"})
    assert cfg["recommendation"]["grid"]["s"][3:] == [[32, 64, 128], [32, 64, 256], [64, 128, 256]]
    with pytest.raises(ConfigError, match="recommendation.methods.bad"):
        resolve_config({**raw, "preset": "demo"},
                       {"recommendation": {"methods": {"bad": {"kind": "vae", "quantizer": "hgrec", "geometry": "poincare"}}}})


def test_codebook_labels_name_each_strategy_once():
    import numpy as np

    from hrq.grid import codebook_label, grid_s, level_sizes, parse_codebook_label

    assert codebook_label(64) == codebook_label([64, 64, 64]) == codebook_label(np.int64(64)) == codebook_label(64.0) == "64"
    assert codebook_label([32, 64, 128]) == codebook_label(np.array([32, 64, 128])) == "32-64-128"
    assert parse_codebook_label("32-64-128") == [32, 64, 128] and parse_codebook_label("64") == 64
    assert level_sizes(3, "64") == [64, 64, 64] and level_sizes(2, "8-16") == [8, 16]
    # jobs and MLflow cells keep an int s for uniform sizes (their identity before strategies)
    assert grid_s("256") == 256 and grid_s("64-128-256") == "64-128-256"
    for bad in (True, 2.5, 0, [8, 0], "8-x", ""):
        with pytest.raises(ValueError):
            codebook_label(bad)
    with pytest.raises(ValueError, match="not canonical; its path is s64"):
        grid_s("64-64-64")


DATASET_ENTRIES = {  # one entry per reader kind, with every key that kind reads
    "synthetic_taxonomy": {"depth": 2, "branching": 3, "dim": 8, "seed": 1},
    "synthetic_catalog": {"depth": 2, "branching": 3, "leaves_per_node": 2, "dim": 8, "users": 10, "min_length": 5,
                          "max_length": 20, "stay_probability": 0.5, "seed": 1},
    "wordnet": {"dict_dir": "/usr/share/wordnet", "root": "mammal.n.01"},
    "movielens": {"zip": "ml.zip", "generate": {"users": 3, "movies": 4, "ratings_per_user_range": [5, 6], "seed": 0},
                  "min_length": 5, "max_length": 20},
    "amazon2014": {"category": "Beauty", "reviews": "r.json.gz", "meta": "m.json.gz", "min_length": 5, "max_length": 20},
    "amazon2018": {"category": "Musical_Instruments", "min_length": 5, "max_length": 20},
    "yelp": {"year": 2019, "min_length": 5, "max_length": 20},
}


@pytest.mark.parametrize("kind", sorted(DATASET_ENTRIES))
def test_each_dataset_kind_takes_its_keys_and_no_other(kind):
    entry = {"kind": kind, **DATASET_ENTRIES[kind]}
    load_config(datasets={"mine": entry})  # every key the reader uses is accepted
    for typo in ("zipp", "review", "categroy"):
        with pytest.raises(ConfigError, match=rf"datasets\.mine: unknown key '{typo}'; this entry takes kind"):
            load_config(datasets={"mine": {**entry, typo: "x"}})
    # A key of another kind is no key of this one (it would be silently ignored by the reader).
    foreign = "users" if kind not in ("synthetic_catalog",) else "category"
    with pytest.raises(ConfigError, match=f"unknown key '{foreign}'"):
        load_config(datasets={"mine": {**entry, foreign: 3}})


def test_amazon_files_come_in_pairs():
    with pytest.raises(ConfigError, match="datasets.amazon_beauty: 'meta' is a dependency of 'reviews'"):
        load_config(datasets={"amazon_beauty": {"kind": "amazon2014", "category": "Beauty", "reviews": "r.json.gz"}})


def test_disclosed_choices_have_paper_values_and_checked_options():
    paper = load_config(preset="paper")
    rec, hier = paper["recommendation"], paper["hierarchy"]
    assert hier["seq2seq"]["decoding"] == rec["seq2seq"]["decoding"] == "constrained"
    assert hier["seq2seq"]["schedule"] == "constant"  # C.1: Adam at 0.001
    assert (rec["seq2seq"]["schedule"], rec["seq2seq"]["lr"], rec["seq2seq"]["warmup_steps"]) == \
        ("inverse_sqrt", 0.01, 10000)  # TIGER's, which C.2 follows
    assert rec["truncation"] == "before_split"  # App. B.2's order
    demo = load_config()
    assert demo["recommendation"]["seq2seq"]["schedule"] == "constant"
    hgrec = load_config(preset="hgrec_ablation")["recommendation"]
    assert hgrec["tokenizer"]["epochs"] >= 9880  # HG-Rec's largest published best epoch
    assert (hgrec["seq2seq"]["d_model"], hgrec["seq2seq"]["lr"], hgrec["seq2seq"]["num_beams"]) == (128, 1e-4, 20)
    for overrides, key in [
        ({"recommendation": {"seq2seq": {"decoding": "greedy"}}}, "recommendation.seq2seq.decoding"),
        ({"hierarchy": {"seq2seq": {"schedule": "cosine"}}}, "hierarchy.seq2seq.schedule"),
        ({"recommendation": {"seq2seq": {"schedule": "inverse_sqrt", "warmup_steps": 0}}},
         "recommendation.seq2seq.warmup_steps"),
        ({"hierarchy": {"seq2seq": {"schedule": "inverse_sqrt"}}}, "'warmup_steps' is a required property"),
        ({"recommendation": {"truncation": "after_split"}}, "recommendation.truncation"),
    ]:
        with pytest.raises(ConfigError) as err:
            load_config(**overrides)
        assert key in str(err.value)


def test_the_split_is_random_by_default_and_leak_free_presets_change_only_it():
    assert load_config(preset="paper")["hierarchy"]["split"] == "random"
    for leak_free, base in (("paper_leakfree", "paper"), ("wordnet_mammal_leakfree", "wordnet_mammal")):
        a, b = load_config(preset=leak_free), load_config(preset=base)
        assert a["hierarchy"].pop("split") == "leak_free" and b["hierarchy"].pop("split") == "random"
        assert a["hierarchy"] == b["hierarchy"] and a["seeds"] == b["seeds"]
    with pytest.raises(ConfigError, match=r"hierarchy.split: 'foo' is not one of \['random', 'leak_free'\]"):
        load_config(preset="demo", hierarchy={"split": "foo"})
