"""Tests for hrq.tracking: cell/job run layout, reruns, failures, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from hrq.tracking import (
    JobRun,
    Tracker,
    cell_key,
    cell_run_name,
    job_run_name,
    default_tracking_uri,
    flatten_params,
    init_store,
    lock_path_for,
    mlflow_key,
)
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

EXPERIMENT = "demo/table1"
CELL = {"dataset": "wordnet", "method": "hrq", "k": 3, "s": 64, "h": 8}
CELL2 = {"dataset": "wordnet", "method": "rq", "k": 3, "s": 64, "h": 8}


def _uri(results: Path) -> str:
    return "sqlite:///" + str(results.resolve() / "mlflow.db")


@pytest.fixture(scope="session")
def template_store(tmp_path_factory) -> Path:
    """A store created once by init_store (schema creation costs seconds); tests copy it."""
    results = tmp_path_factory.mktemp("template") / "results"
    init_store(_uri(results), results)
    assert (results / "mlflow.db").is_file()
    return results / "mlflow.db"


@pytest.fixture
def store(tmp_path, template_store):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copyfile(template_store, results / "mlflow.db")
    uri = _uri(results)
    init_store(uri, results)  # idempotent on an existing store
    return uri, results


@pytest.fixture
def tracker(store):
    uri, results = store
    return Tracker(uri, results)


def _runs(uri: str, experiment: str, view=ViewType.ALL):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], run_view_type=view, max_results=10_000)


def _local(uri: str) -> Path:
    """Local path of an artifact location (plain absolute path or file:// URI)."""
    return Path(url2pathname(urlparse(uri).path)) if uri.startswith("file:") else Path(uri)


# ----------------------------------------------------------------------------- helpers


def test_default_tracking_uri_and_lock_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = default_tracking_uri("res")
    assert uri == f"sqlite:///{tmp_path.resolve()}/res/mlflow.db"
    assert uri.startswith("sqlite:////")
    assert lock_path_for(uri, "elsewhere") == tmp_path.resolve() / "res" / "mlflow.db.lock"
    assert lock_path_for("sqlite:///rel/x.db", "r") == tmp_path.resolve() / "rel" / "x.db.lock"
    assert lock_path_for("http://host:5000", "r") == tmp_path.resolve() / "r" / ".mlflow.lock"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri("res") == "http://tracking.example:5000"


def test_flatten_params():
    flat = flatten_params({"opt": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 0, "empty": {}, "long": "x" * 7000})
    assert flat["opt.lr"] == "0.1" and flat["opt.betas"] == "[0.9, 0.99]"
    assert flat["seed"] == "0" and flat["empty"] == "{}"
    assert len(flat["long"]) == 6000
    assert cell_key({"b": 1, "a": "x"}) == '{"a": "x", "b": 1}'


def test_mlflow_key():
    assert mlflow_key("recall@10/mean") == "recall_at_10/mean"
    assert mlflow_key("a b:c-d.e/f_g") == "a b:c-d.e/f_g"
    assert mlflow_key("/x//y/./z/") == "x/y/z" and mlflow_key("..") == "_"
    assert mlflow_key("acc (%)") == "acc ___"
    assert flatten_params({"eval": {"recall@1": 1}}) == {"eval.recall_at_1": "1"}
    with pytest.raises(ValueError, match="both map"):
        flatten_params({"a@b": 1, "a_at_b": 2})


_TELEMETRY_PROBE = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {src!r})
    if sys.argv[1] == "mlflow-first":
        import mlflow  # creates its telemetry client before hrq.tracking sets the switch
    import hrq.tracking
    from mlflow.telemetry import get_telemetry_client
    from mlflow.telemetry.utils import is_telemetry_disabled
    print(json.dumps({{
        "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY"),
        "DO_NOT_TRACK": os.environ.get("DO_NOT_TRACK"),
        "disabled": is_telemetry_disabled(),
        "client": get_telemetry_client() is not None,
    }}))
    """
)


def test_telemetry_disabled_after_import(tmp_path):
    from mlflow.telemetry import get_telemetry_client

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"].lower() == "true"
    assert get_telemetry_client() is None

    # fresh interpreters without any opt-out or CI/pytest markers in the environment
    drop = {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"))
    src = str(Path(__file__).resolve().parents[1] / "src")
    procs = {
        order: subprocess.Popen(
            [sys.executable, "-c", _TELEMETRY_PROBE.format(src=src), order],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for order in ("hrq-first", "mlflow-first")
    }
    for order, proc in procs.items():
        out, err = proc.communicate(timeout=1800)  # hang guard only
        assert proc.returncode == 0, err
        probe = json.loads(out.strip().splitlines()[-1])
        assert probe == {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                         "disabled": True, "client": False}, order


# ----------------------------------------------------------------------------- runs


def test_init_store_idempotent_and_artifact_location(store, tracker):
    uri, results = store
    init_store(uri, results)  # second call is a no-op
    assert (results / "mlflow.db").is_file()
    eid = tracker.experiment_id(EXPERIMENT)
    assert tracker.experiment_id(EXPERIMENT) == eid
    assert Tracker(uri, results).experiment_id(EXPERIMENT) == eid  # fresh process-like view
    loc = MlflowClient(uri).get_experiment(eid).artifact_location
    assert _local(loc) == results.resolve() / "mlartifacts" / EXPERIMENT


def test_cell_run_idempotent(store, tracker):
    uri, _ = store
    rid = tracker.cell_run(EXPERIMENT, CELL, params={"opt": {"lr": 0.1}})
    assert tracker.cell_run(EXPERIMENT, dict(reversed(CELL.items()))) == rid  # key order irrelevant
    assert Tracker(*store).cell_run(EXPERIMENT, CELL, params={"other": 1}) == rid
    quoted = {**CELL, "method": "it's \"quoted\""}
    rid_q = tracker.cell_run(EXPERIMENT, quoted)
    assert rid_q != rid and tracker.cell_run(EXPERIMENT, quoted) == rid_q

    runs = {r.info.run_id: r for r in _runs(uri, EXPERIMENT)}
    assert set(runs) == {rid, rid_q}
    run = runs[rid]
    assert run.info.run_name == "hrq k3 s64 h8 · wordnet"
    assert run.data.tags["hrq.cell_key"] == cell_key(CELL) == json.dumps(CELL, sort_keys=True)
    assert run.data.tags["method"] == "hrq" and run.data.tags["k"] == "3"
    assert run.data.params == {"dataset": "wordnet", "method": "hrq", "k": "3", "s": "64", "h": "8",
                               "opt.lr": "0.1"}
    assert "mlflow.parentRunId" not in run.data.tags
    assert runs[rid_q].data.tags["hrq.cell_key"] == cell_key(quoted)


def test_job_run_parent_child_linkage_and_metrics(store, tracker, tmp_path):
    uri, results = store
    art = tmp_path / "curve.json"
    art.write_text("[1, 2]")
    params = {"seed": 0, "opt": {"lr": 0.01, "sched": {"name": "cos"}}, "long": "y" * 10_000}
    with tracker.job_run(EXPERIMENT, CELL, "tokenizer/seed0", "tokenizer seed=0", params) as run:
        assert isinstance(run, JobRun)
        for epoch in range(3):
            run.log_metrics({"loss": 1.0 / (epoch + 1), "skipped": float("nan"), "none": None,
                             "recall@10": 0.1 * epoch}, step=epoch)
        run.log_artifact(art)
        run.log_artifact(art, artifact_path="plots")
        run.set_tags({"host": "n1", "long": "z" * 9000})

    parent = tracker.cell_run(EXPERIMENT, CELL)
    assert run.parent_run_id == parent and run.status == "FINISHED"
    client = MlflowClient(uri)
    child = client.get_run(run.run_id)
    tags = child.data.tags
    assert tags["mlflow.parentRunId"] == parent
    assert tags["hrq.job_key"] == "tokenizer/seed0"
    assert tags["hrq.cell_key"] == cell_key(CELL)
    assert tags["method"] == "hrq" and tags["host"] == "n1" and len(tags["long"]) == 8000
    assert child.info.run_name == "hrq k3 s64 h8 tokenizer seed=0 · wordnet"
    assert child.info.status == "FINISHED"
    assert child.data.params["opt.lr"] == "0.01" and child.data.params["opt.sched.name"] == "cos"
    assert len(child.data.params["long"]) == 6000
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")] == [
        (0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    assert "skipped" not in child.data.metrics and "none" not in child.data.metrics
    assert child.data.metrics["recall_at_10"] == pytest.approx(0.2)
    assert sorted(f.path for f in client.list_artifacts(run.run_id)) == ["curve.json", "plots"]
    assert _local(child.info.artifact_uri).is_relative_to(results / "mlartifacts" / EXPERIMENT)

    # aggregate into the parent
    summary = tmp_path / "summary.csv"
    summary.write_text("a,b\n1,2\n")
    summary_metrics = {"acc/mean": 0.75, "acc/paper": float("nan"), "recall@10/n": 3, "x/delta": None}
    assert tracker.log_cell_metrics(EXPERIMENT, CELL, summary_metrics, [summary]) == parent
    prun = client.get_run(parent)
    assert prun.info.status == "FINISHED"
    assert prun.data.metrics == {"acc/mean": 0.75, "recall_at_10/n": 3.0}
    assert [f.path for f in client.list_artifacts(parent)] == ["summary.csv"]
    assert len(_runs(uri, EXPERIMENT)) == 2


def test_job_rerun_replaces_previous_run(store, tracker):
    uri, _ = store
    first = tracker.job_run(EXPERIMENT, CELL, "downstream/seed1", "ds seed=1", {"seed": 1})
    # never ended: as if the job had been SIGKILLed
    for _ in range(2):
        with tracker.job_run(EXPERIMENT, CELL, "downstream/seed1", "ds seed=1", {"seed": 1}) as last:
            last.log_metrics({"acc": 0.5})
    with tracker.job_run(EXPERIMENT, CELL, "downstream/seed2", "ds seed=2", {"seed": 2}) as other:
        pass

    jobs = [r for r in _runs(uri, EXPERIMENT) if r.data.tags.get("hrq.kind") == "job"]
    live = [r for r in jobs if r.info.lifecycle_stage == "active"]
    assert sorted(r.info.run_id for r in live) == sorted([last.run_id, other.run_id])
    by_key = {}
    for r in live:
        by_key.setdefault(r.data.tags["hrq.job_key"], []).append(r)
    assert {k: len(v) for k, v in by_key.items()} == {"downstream/seed1": 1, "downstream/seed2": 1}
    deleted = {r.info.run_id: r for r in jobs if r.info.lifecycle_stage == "deleted"}
    assert len(deleted) == 2 and first.run_id in deleted
    assert deleted[first.run_id].info.status == "KILLED"
    parents = [r for r in _runs(uri, EXPERIMENT) if r.data.tags.get("hrq.kind") == "cell"]
    assert len(parents) == 1


def test_failing_body_marks_failed(store, tracker):
    uri, _ = store
    with pytest.raises(ZeroDivisionError):
        with tracker.job_run(EXPERIMENT, CELL, "job/fail", "fail", {}) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            1 / 0
    with pytest.raises(KeyboardInterrupt):
        with tracker.job_run(EXPERIMENT, CELL, "job/interrupt", "interrupt", None) as run2:
            raise KeyboardInterrupt
    client = MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.get_run(run.run_id).data.metrics == {"loss": 1.0}
    assert client.get_run(run2.run_id).info.status == "KILLED"


# ----------------------------------------------------------------------------- what the MLflow UI shows


def test_run_names_are_short_and_distinct():
    assert cell_run_name(CELL) == "hrq k3 s64 h8 · wordnet"
    assert cell_run_name({"dataset": "beauty", "method": "hgrec", "k": 3, "s": [32, 64, 128], "h": 8}) == \
        "hgrec k3 s32-64-128 h8 · beauty"
    assert cell_run_name({"dataset": "x", "k": 2, "s": 6, "h": 2, "method": "rqvae"}) == "rqvae k2 s6 h2 · x"
    assert cell_run_name({"a": 1}) == "a=1"
    assert job_run_name(CELL, "seed1 tokenizer") == "hrq k3 s64 h8 seed1 tokenizer · wordnet"
    assert job_run_name(CELL, "seed1 lr0.001 recommender") == "hrq k3 s64 h8 seed1 lr0.001 recommender · wordnet"
    assert job_run_name(CELL, "hrq k3 s64 h8 seed1 x · wordnet") == "hrq k3 s64 h8 seed1 x · wordnet"  # kept
    names = {cell_run_name({**CELL, "dataset": d, "method": m, "h": h})
             for d in ("wordnet", "mammals") for m in ("hrq", "rq") for h in (2, 8)}
    assert len(names) == 8


def test_experiment_kind_and_filter_tags(store, tracker):
    uri, _ = store
    client = MlflowClient(uri)
    eid = client.create_experiment("demo/old")  # made before the tags existed
    assert tracker.experiment_id("demo/old") == eid
    assert tracker.experiment_id(EXPERIMENT) != eid
    for name in ("demo/old", EXPERIMENT):
        tags = client.get_experiment_by_name(name).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert tags["hrq.preset"] == "demo" and tags["hrq.table"] == name.split("/")[1]
    with tracker.job_run(EXPERIMENT, CELL, "job/a", "seed1 tokenizer", {}) as run:
        pass
    for rid in (run.run_id, run.parent_run_id):
        tags = client.get_run(rid).data.tags
        assert {k: tags[k] for k in ("hrq.preset", "hrq.table", "hrq.dataset", "hrq.method")} == {
            "hrq.preset": "demo", "hrq.table": "table1", "hrq.dataset": "wordnet", "hrq.method": "hrq"}
    found = client.search_runs([tracker.experiment_id(EXPERIMENT)],
                               "tags.`hrq.dataset` = 'wordnet' and tags.`hrq.method` = 'hrq'")
    assert {r.info.run_id for r in found} == {run.run_id, run.parent_run_id}


def test_old_cell_runs_get_short_names_and_tags(store, tracker):
    uri, _ = store
    client = MlflowClient(uri)
    rid = tracker.cell_run(EXPERIMENT, CELL)
    client.update_run(rid, name="dataset=wordnet method=hrq k=3 s=64 h=8")
    client.delete_tag(rid, "hrq.table")
    assert Tracker(*store).cell_run(EXPERIMENT, CELL) == rid
    run = client.get_run(rid)
    assert run.info.run_name == "hrq k3 s64 h8 · wordnet" and run.data.tags["hrq.table"] == "table1"


def _live(uri):
    return [r for exp in MlflowClient(uri).search_experiments()
            for r in MlflowClient(uri).search_runs([exp.experiment_id], max_results=1000)]


def test_no_run_is_left_running(store, tracker):
    """Figure 4's cells are never aggregated: their parent runs end with their last job."""
    uri, _ = store
    client = MlflowClient(uri)
    cell = {"dataset": "x", "k": 2, "s": 6, "h": 2, "method": "hrq"}
    with tracker.job_run("demo/figure4", cell, "fig.png#hrq", "figure4 hrq", {}) as run:
        assert client.get_run(run.parent_run_id).info.status == "RUNNING"  # while its job runs
    assert client.get_run(run.parent_run_id).info.status == "FINISHED"
    # two jobs of one cell: the parent ends with the last one
    a = tracker.job_run(EXPERIMENT, CELL, "job/a", "seed0 tokenizer", {})
    with tracker.job_run(EXPERIMENT, CELL, "job/b", "seed1 tokenizer", {}):
        pass
    assert client.get_run(a.parent_run_id).info.status == "RUNNING"
    a.end()
    assert client.get_run(a.parent_run_id).info.status == "FINISHED"
    # a rerun reopens the parent; a failure leaves it FAILED, a successful rerun FINISHED
    with pytest.raises(RuntimeError):
        with tracker.job_run(EXPERIMENT, CELL, "job/b", "seed1 tokenizer", {}):
            assert client.get_run(a.parent_run_id).info.status == "RUNNING"
            raise RuntimeError("boom")
    assert client.get_run(a.parent_run_id).info.status == "FAILED"
    with tracker.job_run(EXPERIMENT, CELL, "job/b", "seed1 tokenizer", {}):
        pass
    assert client.get_run(a.parent_run_id).info.status == "FINISHED"
    tracker.log_cell_metrics(EXPERIMENT, CELL, {"recall@10/mean": 0.5})
    statuses = {r.info.status for r in _live(uri)}
    assert statuses == {"FINISHED"}


def test_cell_headline_metrics_are_metrics(store, tracker, tmp_path):
    """What report.aggregate_cell logs on a cell's parent run: mean, std, n, paper, delta per metric."""
    import pandas as pd

    from hrq.stages.report import aggregate_cell

    uri, results = store
    seeds = []
    for seed, value in ((0, 0.4), (1, 0.6)):
        path = tmp_path / f"seed{seed}.parquet"
        pd.DataFrame({"seed": [seed], "metric": ["recall@10"], "value": [value]}).to_parquet(path)
        seeds.append(str(path))
    cell = {"dataset": "wordnet", "method": "hrq", "k": 3, "s": 64, "h": 8}
    params = {"table": "table1", "keys": cell,
              "tracking": {"results_dir": str(results), "experiment": EXPERIMENT, "cell": cell}}
    aggregate_cell({"seeds": seeds}, {"cell": str(tmp_path / "cell.parquet")}, params)
    parent = MlflowClient(uri).get_run(Tracker(uri, results).cell_run(EXPERIMENT, cell))
    metrics = parent.data.metrics
    assert metrics["recall_at_10/mean"] == pytest.approx(0.5)
    assert metrics["recall_at_10/std"] > 0 and metrics["recall_at_10/n"] == 2
    assert "recall_at_10/paper" in metrics and "recall_at_10/delta" in metrics  # Table 1 lists HRQ k3 s64 h8
    assert not any(k.startswith("recall") for k in parent.data.params)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "hrq k3 s64 h8 · wordnet"


def test_dataset_inputs_with_digests(store, tracker, tmp_path):
    import pandas as pd

    from hrq.tracking import file_digest

    uri, results = store
    data = tmp_path / "synthetic_taxonomy"
    data.mkdir()
    nodes, relations = data / "nodes.parquet", data / "relations.parquet"
    pd.DataFrame({"id": [1, 2]}).to_parquet(nodes)
    pd.DataFrame({"a": [1], "b": [2]}).to_parquet(relations)
    out = results / "demo/tokens/tokens.parquet"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"tokens")
    from hrq.tracking import rebuild, run_record_path

    with tracker.job_run(EXPERIMENT, CELL, str(out), "seed0 tokenizer", {}, datasets=[nodes, relations],
                         record=run_record_path(out)) as run:
        pass
    inputs = MlflowClient(uri).get_run(run.run_id).inputs.dataset_inputs
    got = {(d.dataset.name, d.dataset.digest, json.loads(d.dataset.source)["uri"]) for d in inputs}
    assert got == {("synthetic_taxonomy/nodes", file_digest(nodes), nodes.resolve().as_uri()),
                   ("synthetic_taxonomy/relations", file_digest(relations), relations.resolve().as_uri())}
    assert {t.value for d in inputs for t in d.tags if t.key == "mlflow.data.context"} == {"training"}
    # a rebuilt store has them too
    (results / "mlflow.db").unlink()
    rebuild(results)
    client = MlflowClient(uri)
    job = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.`hrq.kind` = 'job'")[0]
    assert {(d.dataset.name, d.dataset.digest) for d in job.inputs.dataset_inputs} == {(n, d) for n, d, _ in got}
    assert job.info.run_name == "hrq k3 s64 h8 seed0 tokenizer · wordnet"
    assert {r.info.status for r in _live(uri)} == {"FINISHED"}


def test_stage_job_run_logs_the_inputs_parquet_files(store, tmp_path):
    import pandas as pd

    from hrq.stages.common import _dataset_files, job_run

    uri, results = store
    emb = tmp_path / "emb.parquet"
    pd.DataFrame({"x": [1.0]}).to_parquet(emb)
    assert _dataset_files({"embeddings": str(emb), "other": [str(emb), "a.txt"], "missing": "no.parquet"}) == [str(emb)]
    spec = {"results_dir": str(results), "experiment": EXPERIMENT, "cell": CELL, "job_key": str(tmp_path / "j"), "run_name": "seed0 x"}
    with job_run({"tracking": spec}, {"seed": 0}, datasets={"embeddings": str(emb)}) as run:
        pass
    names = [d.dataset.name for d in MlflowClient(uri).get_run(run.run_id).inputs.dataset_inputs]
    assert names == [f"{tmp_path.name}/emb"]


# ----------------------------------------------------------------------------- concurrency

N_WORKERS, JOBS_PER_WORKER, EPOCHS = 8, 4, 5
# Workers must be fresh processes that inherit no MLflow/sqlite state from pytest: "spawn" does
# that, but every spawned worker re-imports MLflow + its SQLAlchemy store (~5 s CPU each; on a
# 2-core machine 8 workers cost ~30 s before the first write). "forkserver" gives the same
# isolation (children fork from a clean, single-threaded server that only imported modules)
# while paying the imports once. HRQ_TEST_MP_START=spawn runs the literal spawn variant.
START_METHOD = os.environ.get(
    "HRQ_TEST_MP_START", "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
)


def _concurrent_worker(uri: str, results: str, art_dir: str, worker: int, barrier) -> None:
    tracker = Tracker(uri, results)
    barrier.wait(timeout=1800)  # all processes hit the (not yet existing) parents together
    for j in range(JOBS_PER_WORKER):
        cell = (CELL, CELL2)[(worker + j) % 2]
        key = f"w{worker}/j{j}"
        art = Path(art_dir) / f"w{worker}_j{j}.txt"
        art.write_text(key)
        with tracker.job_run(EXPERIMENT, cell, key, f"job {key}", {"worker": worker, "job": j}) as run:
            for epoch in range(EPOCHS):
                run.log_metrics({"loss": worker + j + epoch / 10, "epoch": epoch}, step=epoch)
            run.log_artifact(art)


def test_concurrent_writers(store, tmp_path):
    uri, results = store  # created by init_store once, before the parallel jobs start
    art_dir = tmp_path / "art"
    art_dir.mkdir()

    ctx = mp.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        ctx.set_forkserver_preload(["hrq.tracking", "mlflow.store.tracking.sqlalchemy_store", __name__])
    barrier = ctx.Barrier(N_WORKERS)
    procs = [
        ctx.Process(target=_concurrent_worker, args=(uri, str(results), str(art_dir), w, barrier))
        for w in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=1800)
    assert [p.exitcode for p in procs] == [0] * N_WORKERS

    client = MlflowClient(uri)
    runs = _runs(uri, EXPERIMENT)
    assert all(r.info.lifecycle_stage == "active" for r in runs)  # nothing replaced or lost
    parents = {r.data.tags["hrq.cell_key"]: r for r in runs if r.data.tags.get("hrq.kind") == "cell"}
    children = [r for r in runs if r.data.tags.get("hrq.kind") == "job"]
    assert sorted(parents) == sorted([cell_key(CELL), cell_key(CELL2)])
    assert len(runs) == 2 + N_WORKERS * JOBS_PER_WORKER
    assert len(children) == N_WORKERS * JOBS_PER_WORKER
    assert sorted(r.data.tags["hrq.job_key"] for r in children) == sorted(
        f"w{w}/j{j}" for w in range(N_WORKERS) for j in range(JOBS_PER_WORKER))

    for r in children:
        w, j = (int(s[1:]) for s in r.data.tags["hrq.job_key"].split("/"))
        cell = (CELL, CELL2)[(w + j) % 2]
        assert r.data.tags["mlflow.parentRunId"] == parents[cell_key(cell)].info.run_id
        assert r.info.status == "FINISHED"
        history = client.get_metric_history(r.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(e, w + j + e / 10) for e in range(EPOCHS)]
        assert len(client.get_metric_history(r.info.run_id, "epoch")) == EPOCHS
        assert [f.path for f in client.list_artifacts(r.info.run_id)] == [f"w{w}_j{j}.txt"]
        assert (_local(r.info.artifact_uri) / f"w{w}_j{j}.txt").read_text() == f"w{w}/j{j}"


# ----------------------------------------------------------------------------- run records, rebuild

from hrq.runrecords import read_record, run_record_path, store_warning  # noqa: E402
from hrq.tracking import rebuild  # noqa: E402


def _snapshot(uri: str) -> dict:
    """Everything a user sees of the live runs, keyed by what identifies them (not run ids)."""
    client = MlflowClient(uri)
    out = {}
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], max_results=10_000)
        names = {r.info.run_id: r.data.tags.get("hrq.cell_key") for r in runs if r.data.tags.get("hrq.kind") == "cell"}
        for r in runs:
            key = (exp.name, r.data.tags.get("hrq.kind"), r.data.tags.get("hrq.job_key") or r.data.tags["hrq.cell_key"])
            history = {k: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(r.info.run_id, k)]
                       for k in r.data.metrics}
            tags = {k: v for k, v in r.data.tags.items()
                    if k not in ("mlflow.parentRunId", "hrq.rebuilt_from", "hrq.original_run_id")}
            out[key] = {"name": r.info.run_name, "status": r.info.status, "params": r.data.params, "tags": tags,
                        "history": history, "parent": names.get(r.data.tags.get("mlflow.parentRunId")),
                        "artifacts": sorted(f.path for f in client.list_artifacts(r.info.run_id)),
                        "start": r.info.start_time if r.data.tags.get("hrq.kind") == "job" else None,
                        "end": r.info.end_time}
    return out


def _pipeline_runs(tracker, results: Path) -> dict[str, Path]:
    """Runs as the pipeline's stages log them: two jobs (one with per-epoch curves, tags and an
    artifact), a job logging two runs (Figure 4's '#name' keys) and a cell."""
    seed0 = results / "demo/tokens/wordnet/hrq/k3_s64_h8/seed0"
    seed0.mkdir(parents=True)
    tokens = seed0 / "tokens.parquet"
    tokens.write_bytes(b"tokens")
    (seed0 / "usage.png").write_bytes(b"png")
    params = {"seed": 0, "tokenizer": {"epochs": 3, "lr": 0.5}, "method_spec": {"geometry": "poincare"}}
    with tracker.job_run(EXPERIMENT, CELL, str(tokens), "seed0 tokenizer", params,
                         record=run_record_path(tokens)) as run:
        for epoch in range(3):
            run.log_metrics({"tokenizer/train/loss": 1.0 / (epoch + 1), "tokenizer/nan": float("nan")}, step=epoch)
        run.log_metrics({"tokenizer/final/collision_rate": 0.25, "tokenizer/final/inf": float("inf")})
        run.set_tags({"host": "n1"})
        run.log_params({"extra": {"late": 1}})
        run.log_artifact(seed0 / "usage.png", artifact_path="figures")
    down = results / "demo/downstream/wordnet/hrq/k3_s64_h8/seed0/metrics.parquet"
    down.parent.mkdir(parents=True)
    down.write_bytes(b"metrics")
    with tracker.job_run(EXPERIMENT, CELL, str(down), "seed0 seq2seq", {"seed": 0},
                         record=run_record_path(down)) as run:
        run.log_metrics({"test/recall@10": 0.5})
    fig = results / "demo/figures/fig4_x.png"
    fig.parent.mkdir(parents=True)
    fig.write_bytes(b"png")
    for name in ("rqvae", "hrqvae"):
        key = f"{fig}#{name}"
        cell = {"dataset": "x", "method": name, "k": 2, "s": 6, "h": 2}
        with tracker.job_run("demo/figure4", cell, key, f"figure4 {name}", {"method": name},
                             record=run_record_path(key)) as run:
            run.log_metrics({"tokenizer/train/loss": 2.0}, step=0)
    cell_file = results / "demo/cells/table1/wordnet/hrq/k3_s64_h8.parquet"
    cell_file.parent.mkdir(parents=True)
    cell_file.write_bytes(b"cell")
    tracker.log_cell_metrics(EXPERIMENT, CELL, {"recall@10/mean": 0.5, "recall@10/paper": float("nan")},
                             [cell_file], record=run_record_path(cell_file))
    return {"tokens": tokens, "down": down, "fig": fig, "cell": cell_file}


def test_run_record_paths():
    assert run_record_path("a/tokens.parquet") == Path("a/tokens.parquet.mlflow.json")
    assert run_record_path("a/fig4_x.png#hrqvae") == Path("a/fig4_x.png.hrqvae.mlflow.json")
    assert run_record_path("a/fig.png#a b/c") == Path("a/fig.png.a_b_c.mlflow.json")


def test_records_hold_what_each_run_logged(store, tracker):
    uri, results = store
    paths = _pipeline_runs(tracker, results)
    rec = read_record(run_record_path(paths["tokens"]))
    assert rec["kind"] == "job" and rec["output"] == "tokens.parquet" and rec["status"] == "FINISHED"
    assert rec["experiment"] == EXPERIMENT and rec["cell"] == CELL and rec["run_name"] == "seed0 tokenizer"
    assert rec["params"]["tokenizer.epochs"] == "3" and rec["params"]["extra.late"] == "1"
    assert rec["tags"] == {"host": "n1"}
    assert [(m[0], m[1], m[3]) for m in rec["metrics"] if m[0] == "tokenizer/train/loss"] == [
        ("tokenizer/train/loss", 1.0, 0), ("tokenizer/train/loss", 0.5, 1), ("tokenizer/train/loss", 1 / 3, 2)]
    assert ["tokenizer/final/inf", float("inf")] == [m[:2] for m in rec["metrics"] if m[0].endswith("inf")][0]
    assert not [m for m in rec["metrics"] if "nan" in m[0]]  # skipped, as in MLflow
    assert rec["artifacts"] == [["usage.png", "figures"]]
    assert MlflowClient(uri).get_run(rec["run_id"]).data.tags["hrq.record_id"] == rec["record_id"]
    fig = read_record(run_record_path(f"{paths['fig']}#hrqvae"))
    assert fig["output"] == "fig4_x.png" and fig["cell"]["method"] == "hrqvae"
    cell = read_record(run_record_path(paths["cell"]))
    assert cell["kind"] == "cell" and cell["artifacts"] == [["k3_s64_h8.parquet", None]]
    assert [m[:2] for m in cell["metrics"]] == [["recall_at_10/mean", 0.5]]


def test_a_rerun_replaces_the_record_and_a_failed_run_leaves_none(store, tracker):
    _, results = store
    out = results / "x" / "metrics.parquet"
    out.parent.mkdir()
    out.write_bytes(b"m")
    record = run_record_path(out)
    with tracker.job_run(EXPERIMENT, CELL, str(out), "first", {}, record=record):
        pass
    first = read_record(record)["record_id"]
    with pytest.raises(RuntimeError):
        with tracker.job_run(EXPERIMENT, CELL, str(out), "second", {}, record=record):
            assert not record.exists()  # deleted when the rerun starts
            raise RuntimeError("diverged")
    assert not record.exists()
    with tracker.job_run(EXPERIMENT, CELL, str(out), "third", {}, record=record):
        pass
    assert read_record(record)["record_id"] != first and read_record(record)["run_name"] == "third"


def _without_store(results: Path, dest: Path) -> tuple[str, Path]:
    """A copy of a results tree as a user has it after ``rm results/mlflow.db`` (this process
    keeps the original store's sqlite connection open, so the copy gets a URI of its own)."""
    shutil.copytree(results, dest, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts", ".mlflow.lock"))
    return _uri(dest), dest


def test_rebuild_restores_a_deleted_store_and_is_idempotent(store, tracker, tmp_path):
    uri, results = store
    paths = _pipeline_runs(tracker, results)
    before = _snapshot(uri)
    assert len(before) == 7  # 4 job runs; cell runs: 1 of table1, 2 of figure4 (one per method)
    # On the intact store, nothing to do.
    report = rebuild(results, uri)
    assert (report["restored"], report["present"], report["stale"]) == (0, 5, 0)
    assert _snapshot(uri) == before

    uri2, results2 = _without_store(results, tmp_path / "copy")
    assert "does not exist" in store_warning(uri2, results2)
    report = rebuild(results2, uri2)
    assert (report["restored"], report["present"], report["stale"], report["unreadable"]) == (5, 0, 0, [])
    after = _snapshot(uri2)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key
    client = MlflowClient(uri2)
    job = [r for r in _runs(uri2, EXPERIMENT) if r.data.tags.get("hrq.job_key") == str(paths["tokens"])][0]
    assert job.data.tags["hrq.rebuilt_from"] == str(results2 / run_record_path(paths["tokens"]).relative_to(results))
    assert [m.step for m in client.get_metric_history(job.info.run_id, "tokenizer/train/loss")] == [0, 1, 2]
    assert _local(job.info.artifact_uri).is_relative_to(results2 / "mlartifacts" / EXPERIMENT)
    assert store_warning(uri2, results2) is None

    again = rebuild(results2, uri2)  # idempotent: nothing duplicated
    assert (again["restored"], again["present"]) == (0, 5)
    assert _snapshot(uri2) == before
    assert len(_runs(uri2, EXPERIMENT, ViewType.ACTIVE_ONLY)) == 3

    # A record whose output is gone is ignored.
    (results2 / paths["down"].relative_to(results)).unlink()
    report = rebuild(results2, uri2)
    assert (report["restored"], report["present"], report["stale"]) == (0, 4, 1)


def test_store_warning_says_what_to_do(store, tracker, tmp_path):
    uri, results = store
    assert store_warning(uri, results) is None  # no records
    paths = _pipeline_runs(tracker, results)
    assert store_warning(uri, results) is None  # the store has every recorded run
    client = MlflowClient(uri)
    job = [r for r in _runs(uri, EXPERIMENT) if r.data.tags.get("hrq.job_key") == str(paths["down"])][0]
    client.delete_run(job.info.run_id)
    assert store_warning(uri, results) == (
        f"{results} holds 5 finished MLflow runs, but the store {uri} holds only 4 of them; their outputs are "
        f"up to date, so Snakemake will not rerun them. Restore the runs without training: "
        f"python -m hrq.tracking rebuild {results}")
    uri2, results2 = _without_store(results, tmp_path / "copy")
    assert store_warning(uri2, results2).startswith(f"{results2} holds 5 finished MLflow runs, but the store "
                                                    f"{uri2} does not exist; ")
    init_store(uri2, results2)  # what the workflow's onstart does: an empty store
    assert f"but the store {uri2} holds none of them; " in store_warning(uri2, results2)
    assert store_warning("http://tracking.example:5000", results) is None  # not checked cheaply


def test_rebuild_command_line(store, tracker, tmp_path):
    _, results = store
    _pipeline_runs(tracker, results)
    uri, results = _without_store(results, tmp_path / "copy")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    outputs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "hrq.tracking", "rebuild", str(results)], env=env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout.strip())
    assert outputs == [
        f"MLflow store {uri}: 5 runs restored from the run records under {results}, 0 already present.",
        f"MLflow store {uri}: 0 runs restored from the run records under {results}, 5 already present."]
    assert len(_runs(uri, EXPERIMENT, ViewType.ACTIVE_ONLY)) == 3


def test_the_workflow_says_what_to_do_when_the_store_is_gone(store, tracker):
    # The check runs when the Snakefile is parsed: onstart hooks are skipped when nothing is to
    # be done, which is exactly what a deleted store looks like to Snakemake.
    uri, results = store
    workdir = results.parent
    out = results / "demo/tokens/synthetic_taxonomy/hrq/k3_s16_h4/seed0/tokens.parquet"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"t")
    with tracker.job_run("demo/table1", CELL, str(out), "seed0 tokenizer", {}, record=run_record_path(out)):
        pass
    (results / "mlflow.db").unlink()
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(repo / "Snakefile"),
                           "--directory", str(workdir), str(out.relative_to(workdir))],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    assert (f"WARNING: results holds 1 finished MLflow run, but the store {uri} does not exist; its output is "
            f"up to date, so Snakemake will not rerun it. Restore the runs without training: "
            f"python -m hrq.tracking rebuild results") in proc.stdout + proc.stderr, proc.stdout + proc.stderr
