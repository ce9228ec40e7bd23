"""Tests for hrq.tracking: cell/job run layout, reruns, failures, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from hrq.tracking import (
    JobRun,
    Tracker,
    cell_key,
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
        out, err = proc.communicate(timeout=120)
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
    assert run.info.run_name == "dataset=wordnet method=hrq k=3 s=64 h=8"
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
    assert child.info.run_name == "tokenizer seed=0"
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
    barrier.wait(timeout=180)  # all processes hit the (not yet existing) parents together
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
        p.join(timeout=240)
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


def test_job_run_overhead(tracker, capsys):
    """Not a benchmark: records the cost of one job_run with 5 log_metrics calls."""
    times = []
    for i in range(3):
        t0 = time.perf_counter()
        with tracker.job_run(EXPERIMENT, CELL, "bench/seed0", "bench", {"seed": 0, "opt": {"lr": 1e-3}}) as run:
            for epoch in range(5):
                run.log_metrics({"loss": 1.0 / (epoch + 1), "acc": 0.1 * epoch}, step=epoch)
        times.append(time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\njob_run + 5 log_metrics: {', '.join(f'{t * 1000:.0f} ms' for t in times)}")
    assert min(times) < 10.0
