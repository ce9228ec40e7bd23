"""Helpers shared by the stage functions: seeding, devices, tracking, long metric frames."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from hrq.device import pick_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_for(params: Mapping[str, Any]) -> torch.device:
    """``params['device']``: ``auto`` (CUDA when visible, honouring CUDA_VISIBLE_DEVICES), ``cpu``
    or ``cuda`` (an error when no GPU is visible)."""
    want = params.get("device", "auto")
    return pick_device(None if want == "auto" else want)


def metrics_frame(seed: int, metrics: Mapping[str, float]) -> pd.DataFrame:
    """The long per-seed metrics schema: ``seed:int64, metric:str, value:float64``."""
    return pd.DataFrame({"seed": pd.Series([seed] * len(metrics), dtype="int64"),
                         "metric": pd.Series(list(metrics), dtype="str"),
                         "value": pd.Series([float(v) for v in metrics.values()], dtype="float64")})


@contextlib.contextmanager
def job_run(params: Mapping[str, Any], hyperparameters: Mapping[str, Any]) -> Iterator[Any]:
    """The MLflow child run of this job, or a no-op logger when ``params`` has no tracking.

    ``params['tracking']`` = ``{results_dir, experiment, cell, job_key, run_name}``.
    """
    spec = params.get("tracking")
    if not spec:
        yield _NoRun()
        return
    from hrq.tracking import Tracker, default_tracking_uri

    tracker = Tracker(default_tracking_uri(spec["results_dir"]), spec["results_dir"])
    with tracker.job_run(spec["experiment"], spec["cell"], spec["job_key"], spec["run_name"],
                         hyperparameters) as run:
        yield run


class _NoRun:
    run_id = None

    def log_metrics(self, metrics, step=None) -> None: ...

    def log_artifact(self, path, artifact_path=None) -> None: ...

    def set_tags(self, tags) -> None: ...


def epoch_logger(run, prefix: str):
    """An ``on_epoch(epoch, metrics)`` callback that logs ``prefix/<metric>`` at step ``epoch``."""

    def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
        run.log_metrics({f"{prefix}/{k}": v for k, v in metrics.items() if k != "epoch"}, step=epoch)

    return on_epoch


def as_path(x: Any) -> Path:
    return Path(str(x))
