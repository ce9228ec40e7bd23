"""What one MLflow job run costs: `Tracker.job_run` with 5 `log_metrics` calls, on a fresh
sqlite store in a temporary directory (moved here from the test suite: a speed is measured,
never asserted).

    .venv/bin/python benchmarks/tracking.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from hrq.tracking import Tracker, default_tracking_uri, init_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as results:
        uri = default_tracking_uri(results)
        init_store(uri, results)
        tracker = Tracker(uri, results)
        cell = {"dataset": "bench", "method": "rq", "k": 3, "s": 64, "h": 8}
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            with tracker.job_run("bench/table1", cell, f"bench/seed{i}", f"seed{i}", {"seed": i, "opt": {"lr": 1e-3}}) as run:
                for epoch in range(5):
                    run.log_metrics({"loss": 1.0 / (epoch + 1), "acc": 0.1 * epoch}, step=epoch)
            times.append(time.perf_counter() - start)
    print(f"{'what':<34} {'first':>8} {'median':>8} {'min':>8}")
    print(f"{'job_run + 5 log_metrics (ms)':<34} {times[0] * 1e3:8.0f} {statistics.median(times) * 1e3:8.0f} "
          f"{min(times) * 1e3:8.0f}")


if __name__ == "__main__":
    main()
