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


def quantizer_options(method: Mapping[str, Any]) -> dict[str, Any]:
    """The quantizer keyword arguments of a configured method (``hierarchy.methods.<name>`` or
    ``recommendation.methods.<name>``), with the library defaults for what it leaves out."""
    return {"geometry": method["geometry"], "curvature": method.get("curvature", 1.0),
            "residual": method.get("residual", "paper"),
            "loss_distance": method.get("loss_distance", "squared_norm")}


def build_vae(input_dim: int, latent_dim: int, levels: int, codebook_size: int,
              method: Mapping[str, Any], opts: Mapping[str, Any]):
    """An (H)RQ-VAE for a configured method and ``recommendation.tokenizer`` options."""
    from hrq.models import ResidualQuantizedVAE

    return ResidualQuantizedVAE(input_dim, latent_dim, tuple(opts["hidden_dims"]), levels=levels,
                                codebook_size=codebook_size, commitment=opts["commitment"],
                                kmeans_init=opts["kmeans_init"], **quantizer_options(method))


def tracker_for(results_dir):
    """The pipeline's MLflow :class:`~hrq.tracking.Tracker` for ``results_dir``."""
    from hrq.tracking import Tracker, default_tracking_uri

    return Tracker(default_tracking_uri(results_dir), results_dir)


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
    with tracker_for(spec["results_dir"]).job_run(spec["experiment"], spec["cell"], spec["job_key"], spec["run_name"],
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
