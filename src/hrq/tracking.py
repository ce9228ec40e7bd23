"""MLflow tracking for the pipeline, safe with many concurrent Snakemake jobs.

Layout in MLflow:

* one **experiment** per results table (name chosen by the caller, e.g. ``"demo/table1"``);
* one **parent run** per table cell, identified by a cell dict such as
  ``{"dataset": "wordnet", "method": "hrq", "k": 3, "s": 64, "h": 8}``; it carries the tag
  ``hrq.cell_key`` (the canonical JSON of the cell) and the aggregated metrics;
* one **child run** per pipeline job (one seed's tokenizer training, one seed's downstream
  training, ...), tagged ``hrq.job_key`` and nested under its cell with ``mlflow.parentRunId``.
  Rerunning a job soft-deletes the job's previous run, so each job has exactly one live run.

Concurrency: a sqlite store that does not exist yet is corrupted for good when several
processes create its schema at once, and concurrent writers can still collide later. So

* :func:`init_store` creates the store once, before parallel jobs start, and
* every call into MLflow made by :class:`Tracker` holds one inter-process
  :class:`filelock.FileLock` (:func:`lock_path_for`), which also makes the
  get-or-create of experiments and cell runs atomic across processes.

Per-epoch ``JobRun.log_metrics`` is a single ``log_batch`` call under the lock.

Telemetry: importing this module sets ``MLFLOW_DISABLE_TELEMETRY=true`` and
``DO_NOT_TRACK=true`` unless they are already set (MLflow 3.x checks both; ``DO_NOT_TRACK``
is the cross-tool convention, so other libraries in the process may honour it too), and
drops a telemetry client that an earlier ``import mlflow`` may already have created.

Lookups use hashed tags (``hrq.cell_id``, ``hrq.job_id``: the first 32 hex chars of the
SHA-256 of the key) because MLflow's filter syntax cannot quote every string; the full
``hrq.cell_key`` / ``hrq.job_key`` tags are compared exactly afterwards.

Metric values that are ``None`` or NaN are **skipped** (not logged), both for cell and job
metrics; infinities are logged as MLflow stores them. Metric ``step`` defaults to 0 as in
MLflow. Metric and param names are made MLflow-valid by :func:`mlflow_key`
(``recall@10`` -> ``recall_at_10``); two names mapping to one key raise ``ValueError``.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import mlflow  # noqa: E402, F401  (initialises MLflow's telemetry switch with the env above)
from filelock import FileLock  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


def _drop_telemetry_client() -> None:
    # `import mlflow` creates its telemetry client once; if mlflow was imported before this
    # module set the switch, a client may exist. Drop it when telemetry is now disabled.
    try:
        from mlflow.telemetry import get_telemetry_client, set_telemetry_client
        from mlflow.telemetry.utils import is_telemetry_disabled

        if get_telemetry_client() is not None and is_telemetry_disabled():
            set_telemetry_client()  # sets the client to None when disabled
    except Exception:  # pragma: no cover - private API drift must never break tracking
        pass


_drop_telemetry_client()

__all__ = [
    "JobRun",
    "Tracker",
    "cell_key",
    "default_tracking_uri",
    "flatten_params",
    "init_store",
    "lock_path_for",
    "mlflow_key",
]

_log = logging.getLogger(__name__)

try:  # MLflow's limits (6000 / 8000 / 100 / 1000 in MLflow 3.x)
    from mlflow.utils.validation import (
        MAX_METRICS_PER_BATCH,
        MAX_PARAM_VAL_LENGTH,
        MAX_PARAMS_TAGS_PER_BATCH,
        MAX_TAG_VAL_LENGTH,
    )
except ImportError:  # pragma: no cover
    MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH = 6000, 8000
    MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH = 100, 1000

LOCK_TIMEOUT_S = 600.0
# filelock polls a non-blocking flock; its 50 ms default adds up to ~50 ms per contended call.
LOCK_POLL_S = 0.005

TAG_CELL_KEY = "hrq.cell_key"
TAG_CELL_ID = "hrq.cell_id"
TAG_JOB_KEY = "hrq.job_key"
TAG_JOB_ID = "hrq.job_id"
TAG_KIND = "hrq.kind"  # "cell" (parent) or "job" (child)
TAG_PARENT = "mlflow.parentRunId"

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


def default_tracking_uri(results_dir: PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` if set (and non-empty), else ``sqlite:///<abs results_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return "sqlite:///" + str(Path(results_dir).resolve() / "mlflow.db")


def _sqlite_db_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI, None for other or in-memory URIs."""
    if not uri.startswith("sqlite://"):
        return None
    rest = uri[len("sqlite://") :].split("?", 1)[0]
    # sqlite:///rel.db -> "/rel.db" (relative), sqlite:////abs.db -> "//abs.db" (absolute)
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:]).resolve()


def _is_local_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "sqlite", "file") or (len(scheme) == 1 and os.name == "nt")


def lock_path_for(uri: str, results_dir: PathLike) -> Path:
    """The inter-process lock file guarding ``uri``: ``<db>.lock`` for sqlite files,
    else ``<results_dir>/.mlflow.lock``."""
    db = _sqlite_db_path(uri)
    if db is not None:
        return db.with_name(db.name + ".lock")
    return Path(results_dir).resolve() / ".mlflow.lock"


def _preimport_store(uri: str) -> None:
    """Import the store implementation outside the lock: importing MLflow's SQLAlchemy
    store takes ~2 s of CPU per process, which would otherwise serialise all jobs."""
    if _sqlite_db_path(uri) is not None or urlparse(uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        try:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        except ImportError:  # pragma: no cover - missing DB driver etc.: MLflow reports it later
            pass


def _file_lock(uri: str, results_dir: PathLike, timeout: float) -> FileLock:
    path = lock_path_for(uri, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout)


def init_store(uri: str, results_dir: PathLike, *, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
    """Create the tracking store (and its directory) once, under the lock. Idempotent.

    Call this before parallel jobs start: sqlite schema creation is not safe under
    concurrency.
    """
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    db = _sqlite_db_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    _preimport_store(uri)
    with _file_lock(uri, results_dir, lock_timeout).acquire(poll_interval=LOCK_POLL_S):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def cell_key(cell: Mapping[str, Any]) -> str:
    """Canonical key of a cell: ``json.dumps(cell, sort_keys=True)`` (non-JSON values as str)."""
    return json.dumps(dict(cell), sort_keys=True, default=str)


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _cell_run_name(cell: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.items())


_INVALID_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def mlflow_key(name: Any) -> str:
    """A metric/param name MLflow accepts (alphanumerics, ``_ - . / : space``, a normalised
    relative path): ``@`` becomes ``_at_`` (``recall@10`` -> ``recall_at_10``), any other
    invalid character ``_``; empty, ``.`` and ``..`` path segments are dropped."""
    key = _INVALID_KEY_CHARS.sub("_", str(name).replace("@", "_at_"))
    return "/".join(part for part in key.split("/") if part not in ("", ".", "..")) or "_"


def _sanitized(items: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for k, v in items:
        key = mlflow_key(k)
        if key in origin and origin[key] != str(k):
            raise ValueError(f"names {origin[key]!r} and {str(k)!r} both map to the MLflow key {key!r}")
        origin[key] = str(k)
        out[key] = v
    return out


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit]


def _flatten(params: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, str]]:
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from _flatten(v, key + ".")
        else:
            yield key, _truncate("{}" if isinstance(v, Mapping) else str(v), MAX_PARAM_VAL_LENGTH)


def flatten_params(params: Mapping[str, Any] | None) -> dict[str, str]:
    """Flatten nested dicts to dotted keys; values stringified and truncated to MLflow's limit.

    ``{"opt": {"lr": 0.1}, "seed": 0}`` -> ``{"opt.lr": "0.1", "seed": "0"}``. An empty nested
    dict becomes ``"{}"``. Keys go through :func:`mlflow_key`.
    """
    return _sanitized(_flatten(params or {}, ""))


def _cell_params(cell: Mapping[str, Any], params: Mapping[str, Any] | None) -> dict[str, str]:
    merged = flatten_params(params)
    for k, v in flatten_params(cell).items():
        if k in merged and merged[k] != v:
            raise ValueError(f"param {k!r}={merged[k]!r} conflicts with cell entry {k}={v!r}")
        merged[k] = v
    return merged


def _cell_tags(cell: Mapping[str, Any]) -> dict[str, str]:
    return {k: _truncate(v, MAX_TAG_VAL_LENGTH) for k, v in flatten_params(cell).items()}


def _metrics(metrics: Mapping[str, Any], step: int | None) -> list[Metric]:
    ts = int(time.time() * 1000)
    out = []
    for k, v in _sanitized(metrics.items()).items():
        if v is None:
            continue
        v = float(v)
        if math.isnan(v):
            continue
        out.append(Metric(key=k, value=v, timestamp=ts, step=int(step or 0)))
    return out


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# --------------------------------------------------------------------------- tracker


class Tracker:
    """Process-safe MLflow writer for the pipeline (see the module docstring).

    Args:
        uri: tracking URI (e.g. :func:`default_tracking_uri`).
        results_dir: the pipeline's results directory; holds the lock for non-sqlite
            stores and, for local stores, the artifacts under ``mlartifacts/<experiment>``.
        lock_timeout: seconds to wait for the inter-process lock before
            :class:`filelock.Timeout` is raised.
    """

    def __init__(self, uri: str, results_dir: PathLike, *, lock_timeout: float = LOCK_TIMEOUT_S):
        self.uri = uri
        self.results_dir = Path(results_dir).resolve()
        self.lock_path = lock_path_for(uri, self.results_dir)
        self._lock = _file_lock(uri, self.results_dir, lock_timeout)
        _preimport_store(uri)
        self._client_obj: MlflowClient | None = None
        self._experiment_ids: dict[str, str] = {}

    # -- internals (callers must hold self._lock) ---------------------------------

    def _locked(self):
        """Context manager holding the inter-process lock (re-entrant within a thread)."""
        return self._lock.acquire(poll_interval=LOCK_POLL_S)

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            self._client_obj = MlflowClient(tracking_uri=self.uri)
        return self._client_obj

    def _artifact_location(self, name: str) -> str | None:
        if not _is_local_store(self.uri):
            return None  # a tracking server decides
        return str(self.results_dir / "mlartifacts" / name)

    def _experiment_id(self, name: str) -> str:
        if name in self._experiment_ids:
            return self._experiment_ids[name]
        exp = self._client.get_experiment_by_name(name)
        if exp is None:
            eid = self._client.create_experiment(name, artifact_location=self._artifact_location(name))
        else:
            eid = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                self._client.restore_experiment(eid)
        self._experiment_ids[name] = eid
        return eid

    def _search(self, eid: str, filter_string: str) -> list[Any]:
        runs, token = [], None
        while True:
            page = self._client.search_runs(
                [eid], filter_string, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _cell_run(self, experiment: str, cell: Mapping[str, Any], params: Mapping[str, Any] | None) -> str:
        eid = self._experiment_id(experiment)
        key = cell_key(cell)
        found = [
            r
            for r in self._search(eid, f"tags.`{TAG_CELL_ID}` = '{_key_id(key)}' and tags.`{TAG_KIND}` = 'cell'")
            if r.data.tags.get(TAG_CELL_KEY) == key
        ]
        if found:
            return min(found, key=lambda r: (r.info.start_time or 0, r.info.run_id)).info.run_id
        tags = {**_cell_tags(cell), TAG_CELL_KEY: key, TAG_CELL_ID: _key_id(key), TAG_KIND: "cell"}
        run = self._client.create_run(eid, tags=tags, run_name=_cell_run_name(cell))
        self._log_batch(run.info.run_id, params=_cell_params(cell, params))
        return run.info.run_id

    def _log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        ps = [Param(k, v) for k, v in (params or {}).items()]
        ts = [RunTag(k, v) for k, v in (tags or {}).items()]
        metrics = list(metrics)
        if len(ps) + len(ts) <= MAX_PARAMS_TAGS_PER_BATCH and len(metrics) + len(ps) + len(ts) <= MAX_METRICS_PER_BATCH:
            if metrics or ps or ts:
                self._client.log_batch(run_id, metrics=metrics, params=ps, tags=ts, synchronous=True)
            return
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=chunk, synchronous=True)
        for chunk in _chunks(ps, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(run_id, params=chunk, synchronous=True)
        for chunk in _chunks(ts, MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(run_id, tags=chunk, synchronous=True)

    # -- public API -----------------------------------------------------------------

    def experiment_id(self, name: str) -> str:
        """Id of experiment ``name``, created (with a deterministic artifact location for
        local stores) if missing, restored if soft-deleted."""
        with self._locked():
            return self._experiment_id(name)

    def cell_run(self, experiment: str, cell: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> str:
        """Run id of the cell's parent run, created if missing (never duplicated).

        At creation the cell entries are logged as params and tags, plus ``params``
        (flattened, dotted keys). Later calls do not log ``params`` again.
        """
        with self._locked():
            return self._cell_run(experiment, cell, params)

    def log_cell_metrics(
        self,
        experiment: str,
        cell: Mapping[str, Any],
        metrics: Mapping[str, float],
        artifacts: Sequence[PathLike] = (),
    ) -> str:
        """Log aggregated ``metrics`` (None/NaN skipped) and upload ``artifacts`` (files or
        directories) to the cell's parent run, then mark it FINISHED. Returns its run id."""
        with self._locked():
            run_id = self._cell_run(experiment, cell, None)
            self._log_batch(run_id, metrics=_metrics(metrics, 0))
            for path in artifacts:
                self._client.log_artifact(run_id, str(path))
            self._client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
        return run_id

    def job_run(
        self,
        experiment: str,
        cell: Mapping[str, Any],
        job_key: str,
        run_name: str,
        params: Mapping[str, Any] | None,
    ) -> JobRun:
        """Start the child run of one pipeline job; use as a context manager.

        Any earlier live run of the same experiment tagged ``hrq.job_key == job_key`` is
        soft-deleted first (marked KILLED if it was still RUNNING), so a rerun replaces
        it. The new run is nested under the cell's parent run (created if needed) and
        carries the cell entries as tags and ``params`` flattened. Leaving the ``with``
        block marks it FINISHED, or FAILED on an exception (KILLED on
        KeyboardInterrupt/SystemExit); the exception propagates.
        """
        key = str(job_key)
        with self._locked():
            parent = self._cell_run(experiment, cell, None)
            eid = self._experiment_id(experiment)
            for old in self._search(eid, f"tags.`{TAG_JOB_ID}` = '{_key_id(key)}'"):
                if old.data.tags.get(TAG_JOB_KEY) != key:
                    continue
                if old.info.status == RunStatus.to_string(RunStatus.RUNNING):
                    self._client.set_terminated(old.info.run_id, RunStatus.to_string(RunStatus.KILLED))
                self._client.delete_run(old.info.run_id)
            ckey = cell_key(cell)
            tags = {
                **_cell_tags(cell),
                TAG_PARENT: parent,
                TAG_CELL_KEY: ckey,
                TAG_CELL_ID: _key_id(ckey),
                TAG_JOB_KEY: _truncate(key, MAX_TAG_VAL_LENGTH),
                TAG_JOB_ID: _key_id(key),
                TAG_KIND: "job",
            }
            run = self._client.create_run(eid, tags=tags, run_name=run_name)
            self._log_batch(run.info.run_id, params=flatten_params(params))
        return JobRun(self, run.info.run_id, parent)


class JobRun:
    """Handle on one job's child run (returned by :meth:`Tracker.job_run`)."""

    def __init__(self, tracker: Tracker, run_id: str, parent_run_id: str):
        self._tracker = tracker
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.status: str | None = None  # set once ended

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (default 0) in one ``log_batch``; None/NaN skipped."""
        batch = _metrics(metrics, step)
        if batch:
            with self._tracker._locked():
                self._tracker._log_batch(self.run_id, metrics=batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log more params (flattened); MLflow rejects changing an existing param's value."""
        with self._tracker._locked():
            self._tracker._log_batch(self.run_id, params=flatten_params(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified, truncated to MLflow's limit)."""
        batch = {str(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
        with self._tracker._locked():
            self._tracker._log_batch(self.run_id, tags=batch)

    def log_artifact(self, path: PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or directory to the run's artifacts (under ``artifact_path``)."""
        with self._tracker._locked():
            self._tracker._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run (idempotent); called by the context manager."""
        if self.status is not None:
            return
        with self._tracker._locked():
            self._tracker._client.set_terminated(self.run_id, status)
        self.status = status

    def __enter__(self) -> JobRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.end("FINISHED")
            return False
        status = "FAILED" if issubclass(exc_type, Exception) else "KILLED"
        try:
            self.end(status)
        except Exception:  # never mask the job's own exception
            _log.exception("could not mark MLflow run %s as %s", self.run_id, status)
        return False

    def __repr__(self) -> str:
        return f"JobRun(run_id={self.run_id!r}, parent_run_id={self.parent_run_id!r}, status={self.status!r})"
