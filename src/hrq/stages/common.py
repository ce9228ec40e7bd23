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
from hrq.grid import level_sizes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_for(params: Mapping[str, Any]) -> torch.device:
    """``params['device']``: ``auto`` (CUDA when visible, honouring CUDA_VISIBLE_DEVICES), ``cpu``
    or ``cuda`` (an error when no GPU is visible)."""
    want = params.get("device", "auto")
    return pick_device(None if want == "auto" else want)


GEOMETRY_OPTIONS = ("curvature", "residual", "loss_distance")


def quantizer_kind(method: Mapping[str, Any]) -> str:
    """The :func:`hrq.quantize.build_quantizer` kind of a configured method: its ``quantizer``
    (``hgrec``, ``hypervq``, ``hypervq_hrq``, ``rsq``, ...), else RQ or HRQ by its geometry."""
    return method.get("quantizer") or ("hrq" if method.get("geometry") == "poincare" else "rq")


def build_method_quantizer(method: Mapping[str, Any], levels: int, codebook_size: int | str | list[int],
                           dim: int, defaults: Mapping[str, Any]):
    """The quantizer of a configured method (``hierarchy.methods.<name>`` or
    ``recommendation.methods.<name>``).

    ``codebook_size`` is the grid's ``s``: an int, one int per level (HG-Rec's
    differential-length codebooks, e.g. ``[64, 128, 256]``) or its label (``"64-128-256"``).
    Options: the method's geometry keys and its ``options`` mapping (passed as given: a key the
    kind does not take is an error), and the tokenizer-wide ``defaults`` (``commitment``,
    ``kmeans_init``), which only reach kinds that have them (RSQ has no commitment term).
    """
    from hrq.quantize import build_quantizer, quantizer_option_names

    kind = quantizer_kind(method)
    accepted = set(quantizer_option_names(kind))
    options = {k: v for k, v in defaults.items() if k in accepted}
    geometry = {k: method[k] for k in GEOMETRY_OPTIONS if k in method and kind != "rq"}
    given = method.get("options", {})
    clash = sorted(k for k in geometry.keys() & given.keys() if geometry[k] != given[k])
    if clash:  # one value per option: a silent winner would train another geometry than the config says
        raise ValueError(f"method sets {clash} twice with different values: "
                         + ", ".join(f"{k}: {geometry[k]!r} vs options.{k}: {given[k]!r}" for k in clash))
    options.update(geometry)
    options.update(given)
    return build_quantizer(kind, levels, level_sizes(levels, codebook_size), dim, **options)


def build_vae(input_dim: int, latent_dim: int, levels: int, codebook_size: int | str | list[int],
              method: Mapping[str, Any], opts: Mapping[str, Any]):
    """An (H)RQ-VAE — or a VAE around any configured quantizer — for a configured method and
    ``recommendation.tokenizer`` options. Its geometry is the quantizer's (where its inputs and
    outputs live); ``reconstruction: hyperbolic`` is HG-Rec's eq. 8 reconstruction term."""
    from hrq.models import ResidualQuantizedVAE

    quantizer = build_method_quantizer(method, levels, codebook_size, latent_dim,
                                       {"commitment": opts["commitment"], "kmeans_init": opts["kmeans_init"]})
    return ResidualQuantizedVAE(input_dim, latent_dim, tuple(opts["hidden_dims"]), quantizer=quantizer,
                                reconstruction=method.get("reconstruction", "mse"))


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
