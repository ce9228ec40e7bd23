"""Screenshots of the MLflow UI on a pipeline store, with headless Chromium.

    .venv/bin/python scripts/mlflow_screenshots.py OUT_DIR [--store results/mlflow.db] [--experiment demo/table1]

Without ``--store`` a small demo store is made in OUT_DIR (three Table 1 cells, two seeds each,
aggregated as the pipeline's report stage does). The store is copied first, so a live
``results/mlflow.db`` is never written to. Starts ``mlflow ui`` on 127.0.0.1 (a free port),
takes ``experiment.png`` (the experiment page as the README's link opens it),
``experiment-default.png`` (the bare experiment URL) and ``cell-run.png`` (a cell's parent run),
then stops the server. Needs ``chromium`` (Debian package) on PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
# MLflow 3.17 picks GenAI or model-training views from this URL parameter (else the last
# choice kept in the browser, GenAI at first).
VIEW = os.environ.get("HRQ_VIEW", "workflowType=machine_learning")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def demo_store(results: Path, experiment: str) -> None:
    """A small store as the pipeline makes it: cells with two seeds' jobs each, aggregated."""
    import pandas as pd

    from hrq.tracking import Tracker, default_tracking_uri, init_store

    uri = default_tracking_uri(results)
    init_store(uri, results)
    tracker = Tracker(uri, results)
    data = results / "data/synthetic_taxonomy"
    data.mkdir(parents=True, exist_ok=True)
    nodes, relations = data / "nodes.parquet", data / "relations.parquet"
    pd.DataFrame({"id": range(5), "name": list("abcde")}).to_parquet(nodes)
    pd.DataFrame({"child": [1, 2], "parent": [0, 0]}).to_parquet(relations)
    cells = [("hrq", 8, 0.62), ("rq", 8, 0.48), ("hrq", 2, 0.41)]
    for method, h, base in cells:
        cell = {"dataset": "synthetic_taxonomy", "method": method, "k": 3, "s": 16, "h": h}
        values = []
        for seed in (0, 1):
            with tracker.job_run(experiment, cell, f"tokens/{method}/h{h}/seed{seed}", f"seed{seed} tokenizer",
                                 {"seed": seed, "tokenizer": {"epochs": 4, "lr": 0.001}},
                                 datasets=[nodes, relations]) as run:
                for epoch in range(4):
                    run.log_metrics({"tokenizer/train/loss": 1.0 / (epoch + 1)}, step=epoch)
            with tracker.job_run(experiment, cell, f"downstream/{method}/h{h}/seed{seed}", f"seed{seed} seq2seq",
                                 {"seed": seed}, datasets=[relations]) as run:
                values.append(base + 0.02 * seed)
                run.log_metrics({"test/recall@10": values[-1]})
        mean = sum(values) / 2
        tracker.log_cell_metrics(experiment, cell, {
            "recall@10/mean": mean, "recall@10/std": 0.014, "recall@10/n": 2,
            "recall@10/paper": 0.6, "recall@10/delta": mean - 0.6})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlflow ui did not answer at {url}")
        time.sleep(1)


def screenshot(chromium: str, url: str, png: Path, budget_ms: int = 20000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1600,1000",
                        f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", url],
                       check=True, capture_output=True, timeout=180)


def take(out: Path, store: Path | None, experiment: str) -> list[Path]:
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install -y chromium)")
    out.mkdir(parents=True, exist_ok=True)
    db = out / "mlflow.db"
    if store is not None:
        shutil.copyfile(store, db)
    elif not db.exists():
        demo_store(out, experiment)
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{db.resolve()}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {db}")
    cell = client.search_runs([exp.experiment_id], "tags.`hrq.kind` = 'cell'", max_results=1)[0]
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    shots = []
    try:
        wait_for(base + "/health")
        pages = {"experiment.png": f"#/experiments/{exp.experiment_id}?{VIEW}",
                 "experiment-default.png": f"#/experiments/{exp.experiment_id}",
                 "cell-run.png": f"#/experiments/{exp.experiment_id}/runs/{cell.info.run_id}?{VIEW}"}
        for name, route in pages.items():
            screenshot(chromium, f"{base}/{route}", out / name)
            shots.append(out / name)
    finally:
        os.killpg(server.pid, 15)  # the server and its workers, started by us in their own session
        server.wait(timeout=30)
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--store", type=Path, default=None, help="an mlflow.db to copy (default: a small demo store)")
    ap.add_argument("--experiment", default="demo/table1")
    args = ap.parse_args(argv)
    for png in take(args.out, args.store, args.experiment):
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
