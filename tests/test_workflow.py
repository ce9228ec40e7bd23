"""The Snakemake workflow end to end on a tiny preset, in a temporary working directory.

One full run (module fixture) is shared by the tests: tables, figures, cells and MLflow runs;
a finished run has nothing left to do; one cell rebuilds by its path; a killed job leaves no
output and a rerun completes; the SLURM profile dry-runs.
"""

import copy
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# Hang detection only: a correct run on a loaded 2-core machine took 822-900+ s, so no test may
# fail for being slow; an hour means something hangs.
HANG_GUARD = 3600
pytestmark = pytest.mark.slow
SMOKE = {
    "preset": "smoke",
    "presets": {
        "smoke": {
            "seeds": [0, 1],
            "device": "cpu",
            "threads": 1,
            "datasets": {
                "synthetic_taxonomy": {"depth": 3, "branching": 3},
                "movielens_generated": {"generate": {"users": 40, "movies": 30,
                                                     "ratings_per_user_range": [5, 12], "seed": 0}},
            },
            "hierarchy": {
                "datasets": ["synthetic_taxonomy"],
                "grid": {"k": [2], "s": [8], "h": [4]},
                "tokenizer": {"epochs": 4, "warmup_epochs": 1, "lr": 0.1, "batch_size": 64},
                "seq2seq": {"d_model": 16, "d_ff": 32, "num_layers": 1, "num_heads": 2, "d_kv": 8,
                            "epochs": 2, "batch_size": 64, "lr": 0.003},
                "figure1": {"k": 2, "s": 8},
            },
            "recommendation": {
                # The whole text chain: generated MovieLens zip -> template descriptions ->
                # sentence-transformers (a tiny local model, see conftest) -> 2 tokenizer lrs.
                "datasets": ["movielens_generated"],
                "descriptions": {"backend": "template"},
                "embedding": {"backend": "sentence-transformers", "model": "<tiny_model>", "batch_size": 16},
                # A codebook strategy (per-level sizes, HG-Rec §3.2) as the grid's s: paths k2_s4-8_h4.
                "grid": {"k": [2], "s": [[4, 8]], "h": [4]},
                # batch 8: 12 steps, so dead-code replacement can act (3 steps of 32 left level 0
                # on one code when the latents drifted off their k-means init)
                "tokenizer": {"hidden_dims": [16], "epochs": 3, "batch_size": 8, "lr": [0.003, 0.001]},
                "seq2seq": {"d_model": 16, "d_ff": 32, "num_layers": 1, "num_heads": 2, "d_kv": 8,
                            "epochs": 2, "batch_size": 64, "lr": 0.003, "eval_every": 1},
                "figure4": {"dataset": "movielens_generated", "k": 2, "s": 4, "epochs": 3},
            },
        }
    },
}
TABLES = ["table1", "table2", "table3", "table4", "training_time", "tokenizers_hierarchy", "tokenizers_recommendation"]


def snakemake(workdir, *args, check=True, timeout=HANG_GUARD, **popen):
    cmd = [sys.executable, "-m", "snakemake", *args, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "smoke.yaml")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    if popen:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, **popen)
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("workflow")
    config = copy.deepcopy(SMOKE)
    config["presets"]["smoke"]["recommendation"]["embedding"]["model"] = str(tiny_model)
    (workdir / "smoke.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    proc = snakemake(workdir, "all_tables", "--cores", "2")
    print(f"smoke all_tables: {time.perf_counter() - start:.0f}s")
    return workdir, proc


def mlflow_client(workdir):
    from mlflow.tracking import MlflowClient

    import hrq.tracking  # noqa: F401  (telemetry off)

    return MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")


def test_all_tables_and_figures_are_built(run):
    workdir, _ = run
    out = workdir / "results" / "smoke"
    for name in TABLES:
        for ext in ("md", "csv", "parquet"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    t1 = (out / "tables" / "table1.md").read_text()
    assert "RQ mean ± std" in t1 and "HRQ mean ± std" in t1 and "Welch p" in t1
    t2 = pd.read_parquet(out / "tables" / "table2.parquet")
    assert set(t2["method"]) == {"most_popular", "random", "rqvae", "hrqvae"}
    assert set(t2["metric"]) == {"ndcg@5", "recall@5", "ndcg@10", "recall@10"}
    assert (t2.loc[t2["method"] != "most_popular", "n"] == 2).all()
    t1 = pd.read_parquet(out / "tables" / "table1.parquet")
    assert set(t1["metric"]) == {"recall@10", "recall@10_nonfrequent", "recall@10_nonderivable",
                                 "embedding oracle recall@10", "embedding oracle recall@10_nonfrequent",
                                 "embedding oracle recall@10_nonderivable"}
    freq = t1[t1["method"] == "frequency"].set_index("metric")["mean"]
    assert freq["recall@10_nonfrequent"] == 0.0 and 0 < freq["recall@10"] <= 1
    comp = t1[t1["method"] == "composition"].set_index("metric")["mean"]
    assert set(comp.index) == {"recall@10", "recall@10_nonfrequent", "recall@10_nonderivable"}
    assert comp["recall@10"] >= comp["recall@10_nonderivable"]  # derivable pairs are in its answer
    models = t1[t1["method"].isin(["rq", "hrq"]) & (t1["metric"] == "recall@10_nonderivable")]
    assert len(models) == 2 and (models["n"] == 2).all()
    t1_md = (out / "tables" / "table1.md").read_text()
    assert "Frequency (baseline)" in t1_md and "Composition (baseline)" in t1_md
    assert re.search(r"synthetic_taxonomy: \d+ test relations, .*% of them non-derivable from train", t1_md)
    for fig in ("fig1_synthetic_taxonomy.png", "fig4_movielens_generated.png"):
        assert (out / "figures" / fig).read_bytes()[:4] == b"\x89PNG"
    usage = list((out / "tokens").rglob("usage.png"))
    assert len(usage) == 4 + 10 and all(p.read_bytes()[:4] == b"\x89PNG" for p in usage)  # one per tokenizer
    # no temp files left behind anywhere
    assert not [p for p in out.rglob(".*tmp*")]
    # one log per job: 2 data + 1 descriptions + 1 embedding + 2 hierarchy tokenizers (each
    # trains the 2 seeds as one stack) + 4 seq2seq + 3 item tokenizers (RQ-VAE and HRQ-VAE each
    # train both seeds at both lrs as one stack, Random one job) + 10 recommenders + 5 cells
    # + 2 baselines + 7 tables + 2 figures + 7 report pages (one HTML page per table, for `--report`)
    assert len(list((out / "logs").rglob("*.log"))) == 46
    texts = pd.read_parquet(out / "text/movielens_generated/descriptions.parquet")
    assert (texts["source"] == "template").all() and texts["text"].str.contains(" film").all()
    t2_md = (out / "tables" / "table2.md").read_text()
    assert "Item texts of movielens_generated: template" in t2_md


def test_table2_cells_keep_the_lr_best_on_validation(run):
    workdir, _ = run
    out = workdir / "results" / "smoke"
    cell = pd.read_parquet(out / "cells/table2/movielens_generated/hrqvae/k2_s4-8_h4.parquet").set_index("metric")
    means = {}
    for lr in ("0.003", "0.001"):
        seeds = [pd.read_parquet(out / f"downstream/movielens_generated/hrqvae/k2_s4-8_h4/lr{lr}/seed{s}/metrics.parquet")
                 .set_index("metric")["value"] for s in (0, 1)]
        means[lr] = sum(float(v["valid/ndcg@10"]) for v in seeds) / 2
        assert cell.loc[f"selection/valid/ndcg@10/lr={lr}", "mean"] == pytest.approx(means[lr])
    chosen = max(means, key=means.get)  # the first lr wins a tie, as in the cell
    assert cell.loc["selection/lr", "mean"] == pytest.approx(float(chosen))
    best = [pd.read_parquet(out / f"downstream/movielens_generated/hrqvae/k2_s4-8_h4/lr{chosen}/seed{s}/metrics.parquet")
            .set_index("metric")["value"] for s in (0, 1)]
    assert cell.loc["recall@10", "mean"] == pytest.approx(sum(float(v["recall@10"]) for v in best) / 2)
    assert all(1 <= float(v["best_epoch"]) <= 2 for v in best)


def test_a_codebook_strategy_runs_as_its_grid_point_and_feeds_the_hgrec_tables(run):
    workdir, _ = run
    out = workdir / "results" / "smoke"
    # Per-level sizes [4, 8] reach every tokenizer, the Random baseline included.
    for method in ("random", "rqvae", "hrqvae"):
        tokens = pd.read_parquet(out / f"tokens/movielens_generated/{method}/k2_s4-8_h4/lr0.003/seed0/tokens.parquet")
        codes = pd.DataFrame(tokens["codes"].tolist())
        assert codes[0].max() < 4 and codes[1].max() < 8 and codes[1].max() >= 4, method
    cell = pd.read_parquet(out / "cells/table2/movielens_generated/rqvae/k2_s4-8_h4.parquet")
    assert set(cell["s"]) == {"4-8"} and set(cell["k"]) == {2}
    # HG-Rec Table 2: epochs and seconds to the lowest collision rate, per VAE tokenizer.
    cost = pd.read_parquet(out / "tables/training_time.parquet")
    assert set(cost["method"]) == {"rqvae", "hrqvae"}
    cost = cost.set_index(["method", "metric"])["mean"]
    for method in ("rqvae", "hrqvae"):
        assert 1 <= cost[method, "epochs_to_min_collision"] <= 3  # tokenizer epochs: 3
        assert 0 < cost[method, "seconds_to_min_collision"] <= 3 * cost[method, "epoch_seconds"] * 1.0001
        assert cost[method, "seconds_to_min_collision"] < cost[method, "train_seconds"]
    # HG-Rec Table 3 (a view of Table 2's cells): one row per codebook strategy, built on request.
    snakemake(workdir, "results/smoke/tables/codebook_strategies.md", "--cores", "1")
    strategies = pd.read_parquet(out / "tables/codebook_strategies.parquet")
    t2 = pd.read_parquet(out / "tables/table2.parquet")
    t2 = t2[t2["metric"] == "ndcg@10"]  # the models and the Most popular baseline
    assert set(strategies["s"]) == {"4-8"} and set(strategies["metric"]) == {"ndcg@10"}
    assert strategies.set_index("method")["mean"].to_dict() == t2.set_index("method")["mean"].to_dict()
    assert "| movielens_generated | 2 | 4 | 4-8 | ndcg@10 |" in (out / "tables/codebook_strategies.md").read_text()


def test_cells_aggregate_their_seed_files(run):
    workdir, _ = run
    out = workdir / "results" / "smoke"
    cell = pd.read_parquet(out / "cells/table1/synthetic_taxonomy/hrq/k2_s8_h4.parquet")
    seeds = [pd.read_parquet(out / f"downstream/synthetic_taxonomy/hrq/k2_s8_h4/seed{s}/metrics.parquet")
             for s in (0, 1)]
    values = [float(df.loc[df["metric"] == "recall@10", "value"].iloc[0]) for df in seeds]
    row = cell[cell["metric"] == "recall@10"].iloc[0]
    assert list(row["values"]) == pytest.approx(values)
    assert row["mean"] == pytest.approx(sum(values) / 2)
    assert row["std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert row["n"] == 2 and list(row["seeds"]) == [0, 1]


def test_mlflow_has_one_parent_per_cell_and_one_child_per_job(run):
    workdir, _ = run
    client = mlflow_client(workdir)
    expected = {"smoke/table1": (2, 2 * 2 * 2), "smoke/table2": (3, 2 * (2 + 2 + 1) * 2)}
    for name, (n_cells, n_jobs) in expected.items():
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("hrq.kind") == "cell"]
        children = [r for r in runs if r.data.tags.get("hrq.kind") == "job"]
        assert len(parents) == n_cells and len(children) == n_jobs
        parent_ids = {r.info.run_id for r in parents}
        assert all(r.data.tags["mlflow.parentRunId"] in parent_ids for r in children)
        assert all(r.info.status == "FINISHED" for r in runs)
        assert len({r.data.tags["hrq.job_key"] for r in children}) == n_jobs
    exp = client.get_experiment_by_name("smoke/table1")
    parent = client.search_runs([exp.experiment_id], "tags.`hrq.kind` = 'cell'")[0]
    assert parent.data.metrics["recall_at_10/n"] == 2
    assert "recall_at_10/mean" in parent.data.metrics
    job = client.search_runs([exp.experiment_id], "attributes.run_name LIKE '%seed0 tokenizer%'")[0]
    assert job.info.run_name == "hrq k2 s8 h4 seed0 tokenizer · synthetic_taxonomy" or \
        job.info.run_name == "rq k2 s8 h4 seed0 tokenizer · synthetic_taxonomy", job.info.run_name
    # its two data files (nodes, relations) are the run's MLflow dataset inputs, with digests
    assert len(job.inputs.dataset_inputs) == 2 and all(i.dataset.digest for i in job.inputs.dataset_inputs)
    curve = client.get_metric_history(job.info.run_id, "tokenizer/train/loss")
    assert [m.step for m in curve] == [0, 1, 2, 3]  # one point per epoch
    assert job.data.params["tokenizer.epochs"] == "4"


def test_nothing_to_do_after_a_complete_run(run):
    workdir, _ = run
    proc = snakemake(workdir, "-n", "all_tables")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_one_cell_rebuilds_by_its_path(run):
    workdir, _ = run
    rel = "results/smoke/cells/table2/movielens_generated/hrqvae/k2_s4-8_h4.parquet"
    cell = workdir / rel
    before = pd.read_parquet(cell)
    cell.unlink()
    proc = snakemake(workdir, rel, "--cores", "1")
    log = proc.stdout + proc.stderr
    assert "aggregate_cell        1" in log.replace("aggregate_cell         1", "aggregate_cell        1") or \
        "1 of 1 steps (100%) done" in log
    pd.testing.assert_frame_equal(pd.read_parquet(cell), before)
    client = mlflow_client(workdir)
    exp = client.get_experiment_by_name("smoke/table2")
    parents = client.search_runs([exp.experiment_id], "tags.`hrq.kind` = 'cell'")
    assert len(parents) == 3  # the cell's parent run was reused, not duplicated


def _job_pids(marker):
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "hrq.stages" in cmd and marker in cmd:
                pids.append(int(d.name))
    return pids


def test_a_killed_job_leaves_no_output_and_a_rerun_completes(run):
    workdir, _ = run
    rel = "results/smoke/downstream/movielens_generated/rqvae/k2_s4-8_h4/lr0.003/seed1/metrics.parquet"
    target = workdir / rel
    target.unlink()
    proc = snakemake(workdir, rel, "--cores", "1", "--retries", "0", start_new_session=True)
    deadline = time.time() + 120
    pids = []
    while time.time() < deadline and not pids:
        pids = _job_pids(str(Path(rel).parent))
        time.sleep(0.2)
    assert pids, "the job never started"
    time.sleep(3)  # inside the job: imports done or training under way
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode != 0, out
    assert not target.exists()
    assert not list(target.parent.glob(".*tmp*"))
    snakemake(workdir, rel, "--cores", "1")
    assert pd.read_parquet(target)["metric"].tolist()
    client = mlflow_client(workdir)
    exp = client.get_experiment_by_name("smoke/table2")
    live = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("hrq.job_key") == rel]
    assert len(live) == 1 and live[0].info.status == "FINISHED"


def test_slurm_profile_dry_run(run):
    workdir, _ = run
    proc = snakemake(workdir, "-n", "all_tables", "--forceall",
                     "--workflow-profile", str(REPO / "workflow/profiles/slurm"))
    log = proc.stdout + proc.stderr
    assert "tokenize_hierarchy" in log and "This was a dry-run" in log


def test_a_changed_config_value_reruns_exactly_the_jobs_that_read_it(run):
    workdir, _ = run
    config_file = workdir / "smoke.yaml"
    original = config_file.read_text()
    changed = yaml.safe_load(original)
    changed["presets"]["smoke"]["hierarchy"]["seq2seq"]["epochs"] = 3
    try:
        config_file.write_text(yaml.safe_dump(changed))
        proc = snakemake(workdir, "-n", "all_tables")
        log = proc.stdout + proc.stderr
    finally:
        config_file.write_text(original)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", log, flags=re.M))
    # the 4 hypernym seq2seq runs, then what reads their metrics; no tokenizer, nothing of Table 2
    assert counts.get("hypernym_generation") == "4", log
    assert "tokenize_hierarchy" not in counts and "recommendation" not in counts and "tokenize_items" not in counts
