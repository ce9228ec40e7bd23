"""Config on the Snakemake command line, as a user types it: typed lists and nested keys, errors
that quote the user's text, and targets outside the configured grid refused (dry runs only)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hrq.config import ConfigError, command_line_texts, deep_merge, resolve_config, typed_value

REPO = Path(__file__).resolve().parents[1]


def test_typed_value_restores_what_yaml_base_loader_left_as_strings():
    assert typed_value(["0", "1"]) == [0, 1]
    assert typed_value({"grid": {"h": ["8", "16"], "s": [["64", "128"]]}, "lr": ["1e-3", "0.5"]}) == \
        {"grid": {"h": [8, 16], "s": [[64, 128]]}, "lr": [0.001, 0.5]}
    assert typed_value(["true", "False", "null", "cuda", "1x", "-3"]) == [True, False, None, "cuda", "1x", -3]


def test_command_line_values_are_typed_and_win_over_the_preset():
    raw = yaml_config()
    cli = {"seeds": ["0", "1"], "hierarchy": {"grid": {"h": ["8"]}}}  # what Snakemake hands over
    cfg = resolve_config(deep_merge(raw, cli), cli, cli, {"seeds": "seeds=[0,1]"})  # merged as Snakemake does
    assert cfg["seeds"] == [0, 1]
    assert cfg["hierarchy"]["grid"] == {"k": [3], "s": [16], "h": [8]}  # the demo's k and s kept
    with pytest.raises(ConfigError, match=r"seeds\[1\]: 'x' is not of type 'integer' \(you gave --config seeds=\[0,x\]\)"):
        resolve_config(raw, {"seeds": ["0", "x"]}, {"seeds": ["0", "x"]}, {"seeds": "seeds=[0,x]"})


def test_command_line_texts_are_the_entries_as_typed():
    argv = ["snakemake", "all_tables", "--config", "seeds=[0,1]", "hierarchy={grid: {h: [8]}}", "--cores", "2",
            "-C", "device=cpu"]
    assert command_line_texts(argv) == {"seeds": "seeds=[0,1]", "hierarchy": "hierarchy={grid: {h: [8]}}",
                                        "device": "device=cpu"}


def yaml_config():
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())


def dry_run(tmp_path, *args):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *args, "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True)


def job_counts(log: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", log, flags=re.M)}


def test_snakemake_takes_typed_list_and_nested_overrides(tmp_path):
    proc = dry_run(tmp_path, "all_tables", "--config", "seeds=[0,1,2]", "hierarchy={grid: {h: [8]}}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout)
    # 2 methods x 1 h x 3 seeds (the demo has h [4, 8] and 2 seeds): one tokenizer job per
    # grid point trains its 3 seeds as one stack, one seq2seq job per seed
    assert counts["tokenize_hierarchy"] == 2 and counts["hypernym_generation"] == 6, counts
    # a tokenizer job per seed, as before stacking
    counts = job_counts(dry_run(tmp_path, "all_tables", "--config", "seeds=[0,1,2]", "seeds_per_job=1",
                                "hierarchy={grid: {h: [8]}}").stdout)
    assert counts["tokenize_hierarchy"] == 6, counts
    # groups of 2: seeds 0-1 in one job, seed 2 in another
    counts = job_counts(dry_run(tmp_path, "all_tables", "--config", "seeds=[0,1,2]", "seeds_per_job=2",
                                "hierarchy={grid: {h: [8]}}").stdout)
    assert counts["tokenize_hierarchy_seeds0_1"] == 2 and counts["tokenize_hierarchy_seed2"] == 2, counts


def test_tokenizer_lrs_train_as_one_stack_and_each_run_keeps_its_files(tmp_path):
    import json
    import shlex

    lrs = "recommendation={tokenizer: {lr: [0.003, 0.001]}}"
    counts = job_counts(dry_run(tmp_path, "all_tables", "--config", lrs).stdout)
    # RQ-VAE and HRQ-VAE: one job each for both lrs and both seeds; Random trains no lr: one job
    assert counts["tokenize_items_lrs"] == 2 and counts["tokenize_items"] == 1, counts
    assert counts["recommendation"] == (2 * 2 + 1) * 2, counts  # still one recommender per (lr, seed)
    counts = job_counts(dry_run(tmp_path, "all_tables", "--config", lrs.replace("]}", "], stack_lrs: false}")).stdout)
    assert counts["tokenize_items"] == 2 * 2 + 1 and "tokenize_items_lrs" not in counts, counts
    counts = job_counts(dry_run(tmp_path, "all_tables", "--config", lrs, "seeds_per_job=1").stdout)
    assert counts["tokenize_items_lrs"] == 2 * 2 and counts["tokenize_items"] == 2, counts  # a job per seed

    # one (lr, seed)'s tokens ask for their stack's job, whose spec gives every run its lr and files
    target = "results/demo/tokens/synthetic_catalog/hrqvae/k2_s16_h8/lr0.001/seed1/tokens.parquet"
    proc = dry_run(tmp_path, target, "-p", "--config", lrs)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    command = next(line for line in proc.stdout.splitlines() if "tokenize-items" in line)
    spec = json.loads(shlex.split(command)[shlex.split(command).index("--job") + 1])["params"]
    runs = [(run["seed"], run["lr"], run["outputs"]["tokens"], run["tracking"]["run_name"]) for run in spec["runs"]]
    assert runs == [(seed, lr, f"results/demo/tokens/synthetic_catalog/hrqvae/k2_s16_h8/lr{lr:g}/seed{seed}/tokens.parquet",
                     f"seed{seed} lr{lr:g} tokenizer") for lr in (0.003, 0.001) for seed in (0, 1)]
    assert spec["options"]["lr"] == [0.003, 0.001] and "stack_lrs" not in spec["options"]


def test_snakemake_quotes_the_bad_value_as_typed(tmp_path):
    proc = dry_run(tmp_path, "all_tables", "--config", "seeds=[0,x]")
    assert proc.returncode != 0
    assert "seeds[1]: 'x' is not of type 'integer' (you gave --config seeds=[0,x])" in proc.stdout + proc.stderr


def test_a_cell_outside_the_grid_is_refused_with_the_grid_named(tmp_path):
    target = "results/demo/cells/table1/synthetic_taxonomy/hrq/k3_s16_h99.parquet"
    proc = dry_run(tmp_path, target)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "synthetic_taxonomy/hrq/k3_s16_h99 is outside the configured hierarchy task (preset demo): " \
           "h 99 is not in hierarchy.grid.h [4, 8]" in log, log
    proc = dry_run(tmp_path, "results/demo/tokens/synthetic_catalog/nope/k2_s16_h8/lr0.003/seed0/tokens.parquet")
    assert proc.returncode != 0
    # an unknown method matches no rule's wildcard constraint: Snakemake itself refuses it
    assert "MissingRuleException" in proc.stdout + proc.stderr or "outside the configured" in proc.stdout + proc.stderr
    ok = dry_run(tmp_path, "results/demo/cells/table1/synthetic_taxonomy/hrq/k3_s16_h8.parquet")
    assert ok.returncode == 0, ok.stdout + ok.stderr
