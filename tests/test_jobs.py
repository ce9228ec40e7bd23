"""Job-level robustness: logs that survive retries, data errors that are not retried, and the
guard that makes an orphaned job (its Snakemake was killed) exit when its rerun starts."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from hrq.jobguard import EXIT_ORPHANED, owner_path

REPO = Path(__file__).resolve().parents[1]


def _snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile", timeout: int = 3600):  # hang guard
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args, "--snakefile", str(snakefile),
                           "--directory", str(workdir)], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ----------------------------------------------------------------------------- logs of retried attempts


_FLAKY = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from hrq.stages.__main__ import STAGES, main

    def flaky(inputs, outputs, params):
        if not Path("attempted").exists():
            Path("attempted").touch()
            print("first attempt output", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)  # killed: nothing of the attempt can clean up
        print("second attempt output", flush=True)
        Path(outputs["out"]).write_text("done")

    STAGES["flaky"] = "__main__:flaky"
    main(sys.argv[1:])
    """)


def test_a_retry_keeps_the_killed_attempts_log(tmp_path):
    # A job run as the workflow's stage_shell runs it (`python -m hrq.stages ... > {log} 2>&1`),
    # whose first attempt is SIGKILLed and whose retry succeeds.
    (tmp_path / "stage.py").write_text(_FLAKY)
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
        import json, sys

        rule flaky:
            output:
                "out.txt",
            params:
                job=lambda w, output: json.dumps({"outputs": {"out": output[0]}}),
            log:
                "logs/flaky.log",
            shell:
                sys.executable + " stage.py flaky --job {params.job:q} > {log:q} 2>&1"
        """))
    proc = _snakemake(tmp_path, "--cores", "1", "--retries", "1", snakefile=tmp_path / "Snakefile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Trying to restart job" in proc.stdout + proc.stderr
    kept = sorted((tmp_path / "logs").glob("flaky.log.attempt-*"))
    assert len(kept) == 1  # the killed attempt's; the successful one removed its own
    first = kept[0].read_text()
    assert first.startswith("[hrq] flaky: attempt started ") and "first attempt output" in first
    assert "second attempt output" not in first
    log = (tmp_path / "logs/flaky.log").read_text().splitlines()
    assert log[0].startswith("[hrq] flaky: attempt started ")
    assert log[1] == f"[hrq] logs of earlier failed or killed attempts, beside this one: {kept[0].name}"
    assert "second attempt output" in log and "first attempt output" not in log
    assert (tmp_path / "out.txt").read_text() == "done"


@pytest.mark.slow
def test_a_parse_error_is_not_retried_and_names_the_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    reviews, meta = raw / "reviews_Beauty_5.json.gz", raw / "meta_Beauty.json.gz"
    with gzip.open(reviews, "wt") as f:
        for i in range(3000):
            f.write(json.dumps({"reviewerID": f"U{i}", "asin": f"B{i % 50}", "unixReviewTime": i,
                                "reviewText": os.urandom(60).hex()}) + "\n")
    with gzip.open(meta, "wt") as f:
        f.write("{'asin': 'B1', 'title': 'x'}\n")
    data = reviews.read_bytes()
    reviews.write_bytes(data[: len(data) // 2])  # an interrupted download
    config = {"datasets": {"amazon_beauty": {"kind": "amazon2014", "category": "Beauty",
                                             "reviews": str(reviews), "meta": str(meta)}},
              "recommendation": {"datasets": ["amazon_beauty"], "embedding": {"backend": "sentence-transformers"}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    # The default profile (retries: 1) explicitly, as `snakemake` in the repo uses it.
    proc = _snakemake(tmp_path, "results/demo/data/amazon_beauty/items.parquet", "--configfile", "bad.yaml",
                      "--workflow-profile", str(REPO / "workflow/profiles/default"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Trying to restart job" not in out
    log = tmp_path / "results/demo/logs/prepare_catalog_data/amazon_beauty.log"
    text = log.read_text()
    assert text.count("[hrq] prepare-data: attempt started") == 1
    assert f"ValueError: {reviews}: truncated gzip file: the compressed data ends after line " in text
    kept = list(log.parent.glob("amazon_beauty.log.attempt-*"))
    assert len(kept) == 1 and kept[0].read_text() == text  # the failed attempt's log, kept
    assert f"[hrq] prepare-data: failed (ValueError); this attempt's log is kept as {kept[0].name}" in text
    assert f"{reviews}: truncated gzip file" in out  # show-failed-logs prints it


# ----------------------------------------------------------------------------- orphaned jobs

_STAGE = textwrap.dedent("""
    import sys, time
    from hrq.stages.__main__ import STAGES, main

    from hrq.io import write_text

    def nap(inputs, outputs, params):
        print("working", flush=True)
        time.sleep(params["seconds"])
        write_text("done", outputs["out"])

    def nap_writing(inputs, outputs, params):
        from hrq.io import atomic_output

        with atomic_output(outputs["out"]) as tmp:
            open(tmp, "w").write("half")
            print("writing", flush=True)
            time.sleep(params["seconds"])

    STAGES["nap"] = "__main__:nap"
    STAGES["nap-writing"] = "__main__:nap_writing"
    main(sys.argv[1:])
    """)


def _stage(out: Path, seconds: float, stage: str = "nap", **popen):
    job = json.dumps({"inputs": {}, "outputs": {"out": str(out)}, "params": {"seconds": seconds}})
    env = {**os.environ, "HRQ_GUARD_POLL_S": "0.2"}
    return subprocess.Popen([sys.executable, "-c", _STAGE, stage, "--job", job], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_an_orphaned_job_exits_when_its_rerun_claims_the_outputs(tmp_path):
    out = tmp_path / "seed0" / "metrics.parquet"
    orphan = _stage(out, 3600)  # only the guard can end it: its nap outlasts every hang guard below
    deadline = time.time() + 600
    while not owner_path(out).exists() and time.time() < deadline:
        time.sleep(0.1)
    claim = json.loads(owner_path(out).read_text())
    assert claim["pid"] == orphan.pid and claim["stage"] == "nap"
    rerun = _stage(out, 1)
    rerun_out, rerun_err = rerun.communicate(timeout=1800)  # hang guards only
    assert rerun.returncode == 0, rerun_err
    _, err = orphan.communicate(timeout=1800)
    assert orphan.returncode == EXIT_ORPHANED
    assert (f"[hrq] nap: {out} is now being built by another job (pid {rerun.pid} on " in err
            and f"this job (pid {orphan.pid}) was orphaned, e.g. its Snakemake was killed, and exits without "
                "writing its outputs" in err), err
    assert out.read_text() == "done"  # the rerun's
    assert not owner_path(out).exists()  # the rerun released its claim
    assert sorted(p.name for p in out.parent.iterdir()) == ["metrics.parquet"]


def test_sigterm_unwinds_a_job_and_leaves_no_temporary_file(tmp_path):
    # `kill <pid>` of an orphan (README, Troubleshooting), scancel, a Slurm time limit.
    out = tmp_path / "seed0" / "tokens.parquet"
    job = _stage(out, 3600, stage="nap-writing")
    assert job.stdout.readline() == "writing\n"  # inside atomic_output, its temporary file written
    assert [p.name for p in out.parent.iterdir() if ".tmp-" in p.name]
    job.send_signal(signal.SIGTERM)
    job.communicate(timeout=1800)  # hang guard only
    assert job.returncode == 143
    assert list(out.parent.iterdir()) == []  # no output, no temporary file, no claim


def _stage_pids(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and b"python" in cmd[0] and b"hrq.stages" in cmd and marker.encode() in b" ".join(cmd):
                pids.append(int(d.name))
    return pids


@pytest.mark.slow
def test_after_snakemake_is_killed_its_orphan_exits_when_the_rerun_starts(tmp_path):
    """Issue 14.5 end to end: kill -9 Snakemake mid-job, --unlock, rerun: the orphaned job
    exits on its own (its log kept, saying why) and the rerun's job alone writes the outputs."""
    target = "results/demo/tokens/synthetic_taxonomy/hrq/k3_s16_h4/seed0/tokens.parquet"
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "HRQ_GUARD_POLL_S": "0.5"}
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
            "--cores", "1"]
    slow = subprocess.Popen([*base, target, "--config", "hierarchy={'tokenizer': {'epochs': 100000}}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = str(Path(target).parent)
    deadline = time.time() + 300
    pids: list[int] = []
    claim = owner_path(tmp_path / Path(target).with_name("metrics.parquet"))  # the first output's
    while time.time() < deadline and not (pids and claim.exists()):
        pids = _stage_pids(marker)
        time.sleep(0.2)
    assert pids and slow.poll() is None, "the tokenizer job never started"
    print(f"job started after {time.time() - deadline + 300:.0f} s")
    slow.kill()  # SIGKILL Snakemake alone: its job runs on, orphaned
    slow.wait()
    time.sleep(1)
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    unlock = subprocess.run([*base, "--unlock"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert unlock.returncode == 0, unlock.stderr
    rerun = subprocess.run([*base, target, "--config", "hierarchy={'tokenizer': {'epochs': 3, 'warmup_epochs': 1}}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    print(f"unlock and rerun took {time.time() - deadline + 300:.0f} s in all")
    deadline = time.time() + 60
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "the orphan is still running"
    logs = tmp_path / "results/demo/logs/tokenize_hierarchy/synthetic_taxonomy/hrq/k3_s16_h4"
    kept = list(logs.glob("seeds0-1.log.attempt-*"))  # the job trains seeds 0 and 1 as one stack
    assert len(kept) == 1
    orphan_log = kept[0].read_text()
    claimed = str(Path(target).with_name("metrics.parquet"))  # the job's first output (sorted by name)
    assert (f"[hrq] tokenize-hierarchy: {claimed} is now being built by another job (pid " in orphan_log
            or f"[hrq] tokenize-hierarchy: {claimed} was claimed by another job, which has already ended" in orphan_log)
    print(orphan_log.strip().splitlines()[-2:])
    assert f"this job (pid {max(pids)}) was orphaned, e.g. its Snakemake was killed" in orphan_log, orphan_log[-2000:]
    assert f"[hrq] tokenize-hierarchy: failed (exit status 75); this attempt's log is kept as {kept[0].name}" \
        in orphan_log
    assert f"[hrq] logs of earlier failed or killed attempts, beside this one: {kept[0].name}" in \
        (logs / "seeds0-1.log").read_text()
    seed = (tmp_path / target).parent
    assert sorted(p.name for p in seed.iterdir()) == [
        "metrics.parquet", "tokens.parquet", "tokens.parquet.mlflow.json", "usage.png"]

    from mlflow.tracking import MlflowClient

    import hrq.tracking  # noqa: F401  (telemetry off)

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo/table1")
    live = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("hrq.job_key") == target]
    assert len(live) == 1 and live[0].info.status == "FINISHED"
    assert live[0].data.params["tokenizer.epochs"] == "3"
