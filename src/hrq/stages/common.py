"""Helpers shared by the stage functions: seeding, devices, tracking, long metric frames."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from hrq.checks import NonFiniteError
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

# Tokenizer-wide options (``recommendation.tokenizer``) that reach a VAE's quantizer when its kind
# takes them (RSQ has no commitment term, only RQ/HRQ replace dead codes).
VAE_QUANTIZER_DEFAULTS = ("commitment", "kmeans_init", "dead_code_threshold", "usage_decay")

# Tokenizer-wide defaults a kind takes only from its method's own ``options:``: HQ-VAE's RSQ
# has no k-means init, so the section's ``kmeans_init: true`` must not add one silently.
OPT_IN_ONLY = {"rsq": frozenset({"kmeans_init"})}


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
    ``kmeans_init``, ``dead_code_threshold``, ``usage_decay``), which only reach kinds that have
    them (RSQ has no commitment term, only RQ/HRQ replace dead codes) and do not opt out of them (:data:`OPT_IN_ONLY`: RSQ gets k-means init
    only from its own ``options: {kmeans_init: true}``).
    """
    from hrq.quantize import build_quantizer, quantizer_option_names

    kind = quantizer_kind(method)
    accepted = set(quantizer_option_names(kind)) - OPT_IN_ONLY.get(kind, frozenset())
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
                                       {k: opts[k] for k in VAE_QUANTIZER_DEFAULTS if k in opts})
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
def job_run(params: Mapping[str, Any], hyperparameters: Mapping[str, Any], datasets: Any = (), *,
            locate: bool = True) -> Iterator[Any]:
    """The MLflow child run of this job, or a no-op logger when ``params`` has no tracking.

    ``params['tracking']`` = ``{results_dir, experiment, cell, job_key, run_name}``. ``datasets``:
    the job's data files (paths, or a stage's ``inputs`` mapping: its ``.parquet`` files are
    taken), logged as the run's MLflow dataset inputs with their digests. ``locate``: a
    :class:`~hrq.checks.NonFiniteError` gets the run's name (else the caller names it).
    """
    spec = params.get("tracking")
    try:
        if not spec:
            yield _NoRun()
            return
        from hrq.runrecords import run_record_path  # the run's record beside its output (hrq.tracking rebuild)

        with tracker_for(spec["results_dir"]).job_run(spec["experiment"], spec["cell"], spec["job_key"],
                                                      spec["run_name"], hyperparameters,
                                                      record=run_record_path(spec["job_key"]),
                                                      datasets=_dataset_files(datasets)) as run:
            yield run
    except NonFiniteError as err:  # say which run diverged; the MLflow run is already marked FAILED
        if not locate or getattr(err, "located", False):
            raise
        raise _located(err, spec, hyperparameters) from err


@contextlib.contextmanager
def job_runs(specs: Sequence[Mapping[str, Any] | None], hyperparameters: Sequence[Mapping[str, Any]],
             datasets: Any = ()) -> Iterator[list[Any]]:
    """:func:`job_run` for each run of a stacked job (one tracking spec and hyperparameters per
    seed), all open while the stack trains. A diverged run fails every run of the job, and the
    error names the one that diverged."""
    try:
        with contextlib.ExitStack() as stack:
            yield [stack.enter_context(job_run({"tracking": spec}, hyper, datasets, locate=False))
                   for spec, hyper in zip(specs, hyperparameters, strict=True)]
    except NonFiniteError as err:
        if getattr(err, "located", False):
            raise
        run = getattr(err, "run", 0)
        raise _located(err, specs[run], hyperparameters[run]) from err


def _located(err: NonFiniteError, spec: Mapping[str, Any] | None, hyperparameters: Mapping[str, Any]) -> NonFiniteError:
    if spec:
        parts = [spec["experiment"], *(f"{k}={v}" for k, v in spec["cell"].items()), spec["run_name"]]
    else:
        parts = [f"{k}={hyperparameters[k]}" for k in ("method", "k", "s", "h", "seed") if k in hyperparameters]
    where = " ".join(map(str, parts))
    located = NonFiniteError(f"{where}: {err}; nothing was written for this job")
    located.located = True
    return located


def _dataset_files(datasets: Any) -> list[str]:
    """The Parquet files among ``datasets``: paths, lists of paths, or a mapping of them."""
    if isinstance(datasets, Mapping):
        datasets = list(datasets.values())
    elif isinstance(datasets, (str, Path)):
        datasets = [datasets]
    files = []
    for d in datasets:
        files += _dataset_files(d) if isinstance(d, (list, tuple, Mapping)) else [str(d)]
    return [f for f in dict.fromkeys(files) if f.endswith(".parquet") and Path(f).is_file()]


class _NoRun:
    run_id = None

    def log_metrics(self, metrics, step=None) -> None: ...

    def log_artifact(self, path, artifact_path=None) -> None: ...

    def log_datasets(self, paths, context="training") -> None: ...

    def set_tags(self, tags) -> None: ...


def epoch_logger(run, prefix: str, total: int | None = None, what: str | None = None):
    """An ``on_epoch(epoch, metrics)`` callback that logs ``prefix/<metric>`` at step ``epoch``
    and, when the job's stdout is its log, writes ``<log>.progress`` (epoch/``total``, ETA) for
    the console's per-job progress lines (:mod:`hrq.progress`). ``what``: a phase name shown in
    that line (e.g. the method of a figure panel)."""
    from hrq.progress import job_progress

    progress = job_progress(total, what)

    def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
        run.log_metrics({f"{prefix}/{k}": v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if progress is not None:
            progress.update(epoch)

    return on_epoch


def as_path(x: Any) -> Path:
    return Path(str(x))
