"""The SLURM profile against a real Slurm controller: a single-node cluster (Debian's slurmctld,
slurmd, munge; accounting off, so the executor polls with squeue) brought up by the shared
recipe ``<repo>/../shared/slurm/setup-slurm.sh``, the demo's smallest training target run
through ``--workflow-profile workflow/profiles/slurm``, then its outputs, its MLflow runs and
the GPU request Slurm received for the training job.

Skips (saying why) only where it cannot run: not root, the recipe absent, or the Slurm packages
neither installed nor installable. A cluster that was already running is used and left alone;
one this test started is torn down by the recipe's teardown script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
RECIPE = Path(__file__).resolve().parents[2] / "shared" / "slurm"
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
TARGET = "results/demo/tokens/synthetic_taxonomy/hrq/k3_s16_h4/seed0/tokens.parquet"


def _run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _installed() -> bool:
    return shutil.which("dpkg") is not None and _run(["dpkg", "-s", *PACKAGES]).returncode == 0


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = _run(["sinfo", "-h", "-o", "%T"], timeout=30)
    return proc.returncode == 0 and bool(re.search(r"^(idle|mixed|allocated)", proc.stdout, re.M))


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("needs root: the test runs slurmctld, slurmd and munged itself (CI runs as root)")
    if not (RECIPE / "setup-slurm.sh").is_file():
        pytest.skip(f"no Slurm recipe at {RECIPE} (CI keeps it in ../shared/slurm beside the repo)")
    if _cluster_up():  # someone else's cluster: use it, leave it running
        yield None
        return
    if not _installed():
        if shutil.which("apt-get") is None:
            pytest.skip(f"the Slurm packages {PACKAGES} are not installed and there is no apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env)
        if install.returncode != 0:
            _run(["apt-get", "update", "-qq"], env=env)
            install = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], env=env)
        if install.returncode != 0:
            pytest.skip(f"cannot install {PACKAGES} with apt-get: {install.stderr.strip()[-500:]}")
    base = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "BASE": str(base), "WITH_DBD": "0"}
    try:
        setup = _run(["bash", str(RECIPE / "setup-slurm.sh")], env=env)
        assert setup.returncode == 0, f"setup-slurm.sh failed:\n{setup.stdout}\n{setup.stderr}"
        print(setup.stdout.strip())
        yield base
    finally:
        _run(["bash", str(RECIPE / "teardown-slurm.sh")], env=env, timeout=120)


@pytest.fixture(scope="module")
def run(slurm, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm-workflow")
    # The demo, with its tokenizer shortened to 3 epochs: a smoke test of the executor.
    (workdir / "small.yaml").write_text("hierarchy:\n  tokenizer: {epochs: 3, warmup_epochs: 1}\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "snakemake", TARGET, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", "small.yaml",
           "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
           # This node has 2 CPUs and ~20 GB: the profile's 4 CPUs / 16 GB per job would never fit.
           "--default-resources", "mem_mb=1000", "cpus_per_task=1", "runtime=10",
           # device is cpu in the demo, so no rule asks for a GPU: ask for one here, as `device:
           # cuda` does, to see what the plugin submits (setup-slurm.sh's node has a gres gpu on
           # /dev/null, so the job is schedulable on this GPU-less machine).
           "--set-resources", "tokenize_hierarchy:gpu=1",
           "--slurm-init-seconds-before-status-checks", "2",
           "--verbose"]  # logs each sbatch call
    start = time.perf_counter()
    proc = _run(cmd, cwd=workdir, env=env, timeout=3600)  # hang guard only
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake via SLURM failed:\n{log[-6000:]}"
    print(f"\nsnakemake {TARGET} via the slurm profile: {seconds:.0f} s")
    return workdir, log


def _submissions(log: str) -> dict[str, tuple[str, str]]:
    """rule -> (sbatch call, SLURM job id), from Snakemake's verbose output."""
    calls = re.findall(r"^sbatch call: (.*--comment rule_(\w+?)_wildcards_.*)$", log, re.M)
    ids = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: .*/rule_(\w+?)/", log)
    by_rule = {rule: call for call, rule in calls}
    return {rule: (by_rule[rule], jobid) for jobid, rule in ids}


def test_the_demo_target_runs_through_the_slurm_profile(run):
    workdir, log = run
    seed = workdir / Path(TARGET).parent
    for name in ("tokens.parquet", "metrics.parquet", "usage.png", "tokens.parquet.mlflow.json"):
        assert (seed / name).stat().st_size > 0, name
    assert (workdir / "results/demo/data/synthetic_taxonomy/relations.parquet").is_file()
    submitted = _submissions(log)
    assert set(submitted) == {"prepare_hierarchy_data", "tokenize_hierarchy"}, log[-4000:]
    for rule, (call, jobid) in submitted.items():
        state = _run(["scontrol", "show", "job", jobid], timeout=30).stdout
        job_state = re.search(r"JobState=\S+", state)
        print(f"{rule}: SLURM job {jobid}, {job_state.group(0) if job_state else state.strip()}")
        assert "JobState=COMPLETED" in state
    # Snakemake polled with squeue (accounting is off) and never needed sacct.
    assert "command=squeue" in log


def test_a_training_jobs_gpu_resource_becomes_a_gpu_request(run):
    _, log = run
    submitted = _submissions(log)
    call, jobid = submitted["tokenize_hierarchy"]
    print(f"tokenize_hierarchy sbatch call: {call[:call.index(' --wrap')]}")
    assert re.search(r"\s--gpus=1(\s|$)", call), call
    tres = re.search(r"TresPerJob=(\S+)", _run(["scontrol", "show", "job", jobid], timeout=30).stdout)
    print(f"tokenize_hierarchy as Slurm recorded it: {tres.group(0) if tres else 'no TresPerJob'}")
    assert tres and tres.group(1) in ("gres:gpu:1", "gres/gpu:1", "gpu:1"), tres
    data_call, _ = submitted["prepare_hierarchy_data"]
    assert "--gpus" not in data_call and "--gres" not in data_call  # a data job asks for none


def test_the_jobs_log_to_mlflow(run):
    from mlflow.tracking import MlflowClient

    import hrq.tracking  # noqa: F401  (telemetry off)

    workdir, _ = run
    client = MlflowClient(f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo/table1")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    jobs = [r for r in runs if r.data.tags.get("hrq.kind") == "job"]
    cells = [r for r in runs if r.data.tags.get("hrq.kind") == "cell"]
    # the job for seed 0's tokens trains the demo's two seeds as one stack: one run per seed
    assert len(jobs) == 2 and len(cells) == 1
    assert sorted(r.info.run_name for r in jobs) == ["hrq k3 s16 h4 seed0 tokenizer · synthetic_taxonomy",
                                                     "hrq k3 s16 h4 seed1 tokenizer · synthetic_taxonomy"]
    assert all(r.info.status == "FINISHED" for r in jobs)
    job = next(r for r in jobs if r.info.run_name.startswith("hrq k3 s16 h4 seed0"))
    assert job.data.tags["mlflow.parentRunId"] == cells[0].info.run_id
    assert job.data.params["tokenizer.epochs"] == "3"
    assert [m.step for m in client.get_metric_history(job.info.run_id, "tokenizer/train/loss")] == [0, 1, 2]
    assert "tokenizer/final/collision_rate" in job.data.metrics
    print(f"MLflow: run {job.info.run_id} '{job.info.run_name}' {job.info.status}, "
          f"{len(job.data.params)} params, {len(job.data.metrics)} metrics")


def test_a_deleted_store_is_noticed_and_rebuilt_without_training(run):
    workdir, _ = run
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    (workdir / "results" / "mlflow.db").unlink()
    dry = [sys.executable, "-m", "snakemake", "-n", TARGET, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", "small.yaml"]
    proc = _run(dry, cwd=workdir, env=env)
    out = proc.stdout + proc.stderr
    uri = f"sqlite:///{(workdir / 'results' / 'mlflow.db').resolve()}"
    warning = (f"WARNING: results holds 2 finished MLflow runs, but the store {uri} does not exist; their "
               f"outputs are up to date, so Snakemake will not rerun them. Restore the runs without training: "
               f"python -m hrq.tracking rebuild results")
    assert warning in out and "Nothing to be done" in out, out
    print(warning)
    rebuild = _run([sys.executable, "-m", "hrq.tracking", "rebuild", "results"], cwd=workdir, env=env)
    assert rebuild.returncode == 0, rebuild.stderr
    print(rebuild.stdout.strip())
    assert rebuild.stdout.strip() == (f"MLflow store {uri}: 2 runs restored from the run records under results, "
                                      f"0 already present.")
    proc = _run(dry, cwd=workdir, env=env)
    assert "WARNING" not in proc.stdout + proc.stderr and "Nothing to be done" in proc.stdout + proc.stderr
