"""MLflow tracking for the pipeline, safe with many concurrent Snakemake jobs.

Layout in MLflow:

* one **experiment** per results table (name chosen by the caller, e.g. ``"demo/table1"``);
* one **parent run** per table cell, identified by a cell dict such as
  ``{"dataset": "wordnet", "method": "hrq", "k": 3, "s": 64, "h": 8}``; it carries the tag
  ``hrq.cell_key`` (the canonical JSON of the cell) and the aggregated metrics;
* one **child run** per pipeline job (one seed's tokenizer training, one seed's downstream
  training, ...), tagged ``hrq.job_key`` and nested under its cell with ``mlflow.parentRunId``.
  Rerunning a job soft-deletes the job's previous run, so each job has exactly one live run.

What the MLflow UI shows (``mlflow ui``): experiments carry ``mlflow.experimentKind =
custom_model_development`` (model training: the runs table, not GenAI traces) and
``hrq.preset`` / ``hrq.table``; runs carry ``hrq.preset``, ``hrq.table``, ``hrq.dataset`` and
``hrq.method`` for filtering. Run names are short: ``hrq k3 s16 h8 · wordnet`` for a cell (method
and grid point first, the dataset last, see :func:`cell_run_name`), ``hrq k3 s16 h8 seed1
tokenizer · wordnet`` for a job (:func:`job_run_name`). A cell's parent run carries the
aggregated metrics (``recall_at_10/mean``, ``/std``, ``/n``, ``/paper``, ``/delta``). A parent
run is RUNNING while a job of its cell runs and ends FINISHED (or FAILED when one of its live
jobs failed) with the last one; aggregating the cell ends it FINISHED. A job's data files are
logged as MLflow dataset inputs with their digest.

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

Run records (:mod:`hrq.runrecords`): given a ``record`` path, :meth:`Tracker.job_run` and
:meth:`Tracker.log_cell_metrics` also write everything the run logged (params, tags, every
metric point with its step and timestamp, status, times, artifacts) to that JSON file when the
run finishes, beside the job's output. :func:`rebuild` (``python -m hrq.tracking rebuild
results/``) replays the records into a new or emptied store, idempotently: a run whose record
is already in the store (tag ``hrq.record_id``) is left alone.

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
import uuid  # noqa: E402
from collections.abc import Iterable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

import mlflow  # noqa: E402, F401  (initialises MLflow's telemetry switch with the env above)
from filelock import FileLock  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag, ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from hrq.runrecords import (  # noqa: E402
    RECORD_FORMAT,
    RECORD_SUFFIX,
    TAG_RECORD,
    default_tracking_uri,
    find_records,
    read_record,
    record_output,
    run_record_path,
    sqlite_db_path,
)


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
    "cell_run_name",
    "dataset_entry",
    "default_tracking_uri",
    "flatten_params",
    "init_store",
    "job_run_name",
    "lock_path_for",
    "mlflow_key",
    "rebuild",
    "run_record_path",
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
TAG_REBUILT = "hrq.rebuilt_from"  # on runs restored by rebuild(): the record file
TAG_ORIGINAL_RUN = "hrq.original_run_id"  # on runs restored by rebuild(): the run id first logged
TAG_PRESET = "hrq.preset"  # experiments and runs: "demo" of "demo/table1"
TAG_TABLE = "hrq.table"  # experiments and runs: "table1" of "demo/table1"
TAG_DATASET = "hrq.dataset"  # runs: the cell's dataset
TAG_METHOD = "hrq.method"  # runs: the cell's method
# The MLflow UI opens an experiment by its kind: GenAI ("Traces") or model training (the runs
# table). MLflow's own tag and value for the latter (mlflow.entities.ExperimentKind in 3.x).
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
DATASET_CONTEXT = "mlflow.data.context"

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- helpers


def _is_local_store(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "sqlite", "file") or (len(scheme) == 1 and os.name == "nt")


def lock_path_for(uri: str, results_dir: PathLike) -> Path:
    """The inter-process lock file guarding ``uri``: ``<db>.lock`` for sqlite files,
    else ``<results_dir>/.mlflow.lock``."""
    db = sqlite_db_path(uri)
    if db is not None:
        return db.with_name(db.name + ".lock")
    return Path(results_dir).resolve() / ".mlflow.lock"


def _preimport_store(uri: str) -> None:
    """Import the store implementation outside the lock: importing MLflow's SQLAlchemy
    store takes ~2 s of CPU per process, which would otherwise serialise all jobs."""
    if sqlite_db_path(uri) is not None or urlparse(uri).scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
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
    db = sqlite_db_path(uri)
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


GRID_KEYS = ("k", "s", "h")


def _grid_value(v: Any) -> str:
    return "-".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def cell_run_name(cell: Mapping[str, Any]) -> str:
    """The short name of a cell's parent run: ``"hrq k3 s16 h8 · wordnet"``.

    The method and grid point come first (what tells a table's rows apart, and what stays
    visible when the UI cuts a name off), any other cell entries as ``key=value``, and the
    dataset last after `` · ``: an experiment is one table, which may hold several datasets,
    so the dataset is always part of the name (names never depend on what else was logged)."""
    cell = dict(cell)
    parts = [str(cell["method"])] if "method" in cell else []
    parts += [f"{k}{_grid_value(cell[k])}" for k in GRID_KEYS if k in cell]
    parts += [f"{k}={_grid_value(v)}" for k, v in cell.items() if k not in ("method", "dataset", *GRID_KEYS)]
    name = " ".join(parts)
    if "dataset" in cell:
        name = f"{name} · {cell['dataset']}" if name else str(cell["dataset"])
    return name or "cell"


def job_run_name(cell: Mapping[str, Any], run_name: str) -> str:
    """A job's child run name: the cell's name with the job's part (``"seed1 tokenizer"``) after
    the grid point: ``"hrq k3 s16 h8 seed1 tokenizer · wordnet"``. A name that already starts
    with the cell's is kept."""
    cell_name = cell_run_name(cell)
    head, sep, dataset = cell_name.partition(" · ")
    if run_name.startswith(head):
        return run_name
    return f"{head} {run_name}{sep}{dataset}" if head != "cell" else f"{run_name}{sep}{dataset}"


def _experiment_tags(experiment: str) -> dict[str, str]:
    """Tags of an experiment named ``<preset>/<table>``: its kind (runs table in the UI),
    ``hrq.preset`` and ``hrq.table``."""
    tags = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
    preset, sep, table = experiment.rpartition("/")
    if sep:
        tags.update({TAG_PRESET: preset, TAG_TABLE: table})
    return tags


def _run_tags(experiment: str, cell: Mapping[str, Any]) -> dict[str, str]:
    """The filter tags of every run: ``hrq.preset``, ``hrq.table``, ``hrq.dataset``, ``hrq.method``."""
    tags = {k: v for k, v in _experiment_tags(experiment).items() if k != TAG_EXPERIMENT_KIND}
    for tag, key in ((TAG_DATASET, "dataset"), (TAG_METHOD, "method")):
        if key in cell:
            tags[tag] = _truncate(str(cell[key]), MAX_TAG_VAL_LENGTH)
    return tags


def file_digest(path: PathLike) -> str:
    """A dataset file's digest as MLflow shows it: the first 10 hex chars of its SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]


def dataset_entry(path: PathLike, name: str | None = None, context: str = "training") -> list[str]:
    """``[name, digest, source uri, context]`` of a dataset file, as records keep it. The name
    defaults to the file's parent folder and stem (``synthetic_taxonomy/nodes``)."""
    p = Path(path).resolve()
    return [name or f"{p.parent.name}/{p.stem}", file_digest(p), p.as_uri(), context]


def _dataset_inputs(entries: Sequence[Sequence[str]]) -> list[DatasetInput]:
    return [DatasetInput(Dataset(name=n, digest=d, source_type="local", source=json.dumps({"uri": uri})),
                         tags=[InputTag(DATASET_CONTEXT, ctx)]) for n, d, uri, ctx in entries]


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


def _metric_row(m: Metric) -> list[Any]:
    return [m.key, m.value, m.timestamp, m.step]


def _chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write a run record atomically (temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")  # unsorted: the cell keeps its order
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _artifact_ref(path: PathLike, record: Path | None) -> str:
    """An artifact path as a record keeps it: relative to the record's directory when inside it."""
    p = Path(path).resolve()
    if record is not None:
        try:
            return str(p.relative_to(record.parent.resolve()))
        except ValueError:
            pass
    return str(p)


def _record_base(kind: str, experiment: str, cell: Mapping[str, Any], record: Path, key: str | None = None
                 ) -> dict[str, Any]:
    """The common part of a run record. ``output`` is the file the record belongs to: the path
    part of a job key (``fig.png`` of ``.../fig.png#hrq``), else the record's name less its suffix."""
    if key is not None and "#" in key:
        output = Path(key.partition("#")[0]).name
    else:
        output = record.name[: -len(RECORD_SUFFIX)] if record.name.endswith(RECORD_SUFFIX) else record.name
    return {"format": RECORD_FORMAT, "kind": kind, "record_id": uuid.uuid4().hex, "experiment": experiment,
            "cell": json.loads(json.dumps(dict(cell), default=str)), "output": output}  # order kept: run names


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
        tags = _experiment_tags(name)
        if exp is None:
            eid = self._client.create_experiment(name, artifact_location=self._artifact_location(name), tags=tags)
        else:
            eid = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                self._client.restore_experiment(eid)
            for k, v in tags.items():  # experiments made before these tags existed
                if exp.tags.get(k) != v:
                    self._client.set_experiment_tag(eid, k, v)
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

    def _settle_cell(self, eid: str, parent: str) -> str | None:
        """End a cell's parent run once none of its live jobs runs: FAILED when one of them did
        not finish, else FINISHED. Returns the status set (None: a job still runs)."""
        children = self._search(eid, f"tags.`{TAG_PARENT}` = '{parent}'")
        statuses = {r.info.status for r in children}
        if statuses & {RunStatus.to_string(RunStatus.RUNNING), RunStatus.to_string(RunStatus.SCHEDULED)}:
            return None
        status = "FINISHED" if statuses <= {RunStatus.to_string(RunStatus.FINISHED)} else "FAILED"
        # the last job's end (not now), so that a rebuilt store shows the same times
        end = max((r.info.end_time or 0 for r in children), default=0) or _now_ms()
        self._client.set_terminated(parent, status, end_time=end)
        return status

    def _reopen(self, run_id: str) -> None:
        """Mark a cell's parent run RUNNING again while one of its jobs runs."""
        if self._client.get_run(run_id).info.status != RunStatus.to_string(RunStatus.RUNNING):
            self._client.update_run(run_id, status="RUNNING")

    def _cell_run(self, experiment: str, cell: Mapping[str, Any], params: Mapping[str, Any] | None) -> str:
        eid = self._experiment_id(experiment)
        key = cell_key(cell)
        found = [
            r
            for r in self._search(eid, f"tags.`{TAG_CELL_ID}` = '{_key_id(key)}' and tags.`{TAG_KIND}` = 'cell'")
            if r.data.tags.get(TAG_CELL_KEY) == key
        ]
        name, extra = cell_run_name(cell), _run_tags(experiment, cell)
        if found:
            run = min(found, key=lambda r: (r.info.start_time or 0, r.info.run_id))
            if run.info.run_name != name:  # a run made before names were short
                self._client.update_run(run.info.run_id, name=name)
            missing = {k: v for k, v in extra.items() if run.data.tags.get(k) != v}
            if missing:
                self._log_batch(run.info.run_id, tags=missing)
            return run.info.run_id
        tags = {**_cell_tags(cell), **extra, TAG_CELL_KEY: key, TAG_CELL_ID: _key_id(key), TAG_KIND: "cell"}
        run = self._client.create_run(eid, tags=tags, run_name=name)
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
        *,
        record: PathLike | None = None,
    ) -> str:
        """Log aggregated ``metrics`` (None/NaN skipped) and upload ``artifacts`` (files or
        directories) to the cell's parent run, then mark it FINISHED. Returns its run id.

        With ``record`` (a path beside the cell's output, see :func:`run_record_path`), what was
        logged is also written there, so that :func:`rebuild` can restore it."""
        batch = _metrics(metrics, 0)
        rec = None
        if record is not None:
            record = Path(record)
            rec = {**_record_base("cell", experiment, cell, record), "metrics": [_metric_row(m) for m in batch],
                   "artifacts": [[_artifact_ref(a, record), None] for a in artifacts]}
        with self._locked():
            run_id = self._cell_run(experiment, cell, None)
            self._log_batch(run_id, metrics=batch, tags={TAG_RECORD: rec["record_id"]} if rec else None)
            for path in artifacts:
                self._client.log_artifact(run_id, str(path))
            end = _now_ms()
            self._client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED), end_time=end)
        if rec is not None:
            _write_record(record, {**rec, "run_id": run_id, "status": "FINISHED", "end_time": end})
        return run_id

    def job_run(
        self,
        experiment: str,
        cell: Mapping[str, Any],
        job_key: str,
        run_name: str,
        params: Mapping[str, Any] | None,
        *,
        record: PathLike | None = None,
        datasets: Sequence[PathLike] = (),
    ) -> JobRun:
        """Start the child run of one pipeline job; use as a context manager.

        Any earlier live run of the same experiment tagged ``hrq.job_key == job_key`` is
        soft-deleted first (marked KILLED if it was still RUNNING), so a rerun replaces
        it. The new run is nested under the cell's parent run (created if needed) and
        carries the cell entries as tags and ``params`` flattened. Leaving the ``with``
        block marks it FINISHED, or FAILED on an exception (KILLED on
        KeyboardInterrupt/SystemExit); the exception propagates. The parent run is RUNNING
        while a job of its cell runs and ends with the last one (:meth:`_settle_cell`), so no
        run stays RUNNING, also for cells that are never aggregated (Figure 4).

        The run is named :func:`job_run_name` (``run_name`` is the job's part, e.g.
        ``"seed1 tokenizer"``), tagged ``hrq.preset/table/dataset/method``, and each file of
        ``datasets`` (the job's data, e.g. nodes/relations or embeddings Parquet) is logged
        as an MLflow dataset input with its file digest.

        With ``record`` (a path beside the job's output, see :func:`run_record_path`), an
        existing record there is deleted now and, when the run FINISHES, everything it logged
        is written there, so that :func:`rebuild` can restore the run.
        """
        key = str(job_key)
        flat = flatten_params(params)
        rec = None
        if record is not None:
            record = Path(record)
            record.unlink(missing_ok=True)  # the old run is replaced; so is its record
            rec = {**_record_base("job", experiment, cell, record, key), "job_key": key, "run_name": run_name,
                   "params": flat}
        inputs = [dataset_entry(d) for d in datasets]
        if rec is not None:
            rec["datasets"] = inputs
        with self._locked():
            parent = self._cell_run(experiment, cell, None)
            eid = self._experiment_id(experiment)
            self._delete_job_runs(eid, key)
            self._reopen(parent)
            tags = self._job_tags(experiment, cell, key, parent)
            if rec is not None:
                tags[TAG_RECORD] = rec["record_id"]
            run = self._client.create_run(eid, tags=tags, run_name=job_run_name(cell, run_name))
            self._log_batch(run.info.run_id, params=flat)
            if inputs:
                self._client.log_inputs(run.info.run_id, datasets=_dataset_inputs(inputs))
        if rec is not None:
            rec.update(run_id=run.info.run_id, start_time=run.info.start_time)
        return JobRun(self, run.info.run_id, parent, record=record, record_data=rec, experiment_id=eid)

    def _live_job_runs(self, eid: str, key: str) -> list[Any]:
        return [r for r in self._search(eid, f"tags.`{TAG_JOB_ID}` = '{_key_id(key)}'")
                if r.data.tags.get(TAG_JOB_KEY) == key]

    def _delete_job_runs(self, eid: str, key: str, runs: Sequence[Any] | None = None) -> None:
        for old in self._live_job_runs(eid, key) if runs is None else runs:
            if old.info.status == RunStatus.to_string(RunStatus.RUNNING):
                self._client.set_terminated(old.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            self._client.delete_run(old.info.run_id)

    @staticmethod
    def _job_tags(experiment: str, cell: Mapping[str, Any], key: str, parent: str) -> dict[str, str]:
        ckey = cell_key(cell)
        return {
            **_cell_tags(cell),
            **_run_tags(experiment, cell),
            TAG_PARENT: parent,
            TAG_CELL_KEY: ckey,
            TAG_CELL_ID: _key_id(ckey),
            TAG_JOB_KEY: _truncate(key, MAX_TAG_VAL_LENGTH),
            TAG_JOB_ID: _key_id(key),
            TAG_KIND: "job",
        }

    # -- rebuilding from run records ------------------------------------------------

    def restore(self, record: Mapping[str, Any], record_path: PathLike) -> str:
        """Replay one run record (see :func:`rebuild`) into the store.

        Returns ``"restored"``, ``"present"`` (a live run already carries the record's id) or
        ``"running"`` (a live run of the same job is still RUNNING: left alone)."""
        record_path = Path(record_path)
        base = record_path.parent
        artifacts = [(base / a if not Path(a).is_absolute() else Path(a), ap) for a, ap in record.get("artifacts", [])]
        metrics = [Metric(key=k, value=float(v), timestamp=int(t), step=int(st)) for k, v, t, st in record["metrics"]]
        experiment, cell = record["experiment"], record["cell"]
        rebuilt_tags = {TAG_RECORD: record["record_id"], TAG_REBUILT: _truncate(str(record_path), MAX_TAG_VAL_LENGTH)}
        if record.get("run_id"):
            rebuilt_tags[TAG_ORIGINAL_RUN] = str(record["run_id"])
        with self._locked():
            if record["kind"] == "cell":
                run_id = self._cell_run(experiment, cell, None)
                if self._client.get_run(run_id).data.tags.get(TAG_RECORD) == record["record_id"]:
                    return "present"
                self._log_batch(run_id, metrics=metrics, tags=rebuilt_tags)
                for path, artifact_path in artifacts:
                    if path.exists():
                        self._client.log_artifact(run_id, str(path), artifact_path)
                self._client.set_terminated(run_id, record.get("status", "FINISHED"), end_time=record.get("end_time"))
                return "restored"
            key = str(record["job_key"])
            eid = self._experiment_id(experiment)
            live = self._live_job_runs(eid, key)
            if any(r.data.tags.get(TAG_RECORD) == record["record_id"] for r in live):
                return "present"
            if any(r.info.status == RunStatus.to_string(RunStatus.RUNNING) for r in live):
                return "running"
            parent = self._cell_run(experiment, cell, None)
            self._delete_job_runs(eid, key, live)
            tags = {**self._job_tags(experiment, cell, key, parent), **rebuilt_tags}
            run = self._client.create_run(eid, start_time=record.get("start_time"), tags=tags,
                                          run_name=job_run_name(cell, record["run_name"]))
            if record.get("datasets"):
                self._client.log_inputs(run.info.run_id, datasets=_dataset_inputs(record["datasets"]))
            user_tags = {str(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in record.get("tags", {}).items()}
            self._log_batch(run.info.run_id, metrics=metrics, params=record["params"], tags=user_tags)
            for path, artifact_path in artifacts:
                if path.exists():
                    self._client.log_artifact(run.info.run_id, str(path), artifact_path)
            self._client.set_terminated(run.info.run_id, record["status"], end_time=record.get("end_time"))
            if self._client.get_run(parent).data.tags.get(TAG_RECORD) is None:  # not aggregated: as job_run ends it
                self._settle_cell(eid, parent)
        return "restored"


class JobRun:
    """Handle on one job's child run (returned by :meth:`Tracker.job_run`)."""

    def __init__(self, tracker: Tracker, run_id: str, parent_run_id: str, *, record: PathLike | None = None,
                 record_data: dict[str, Any] | None = None, experiment_id: str | None = None):
        self._tracker = tracker
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.status: str | None = None  # set once ended
        self.record = Path(record) if record is not None else None
        self._rec = ({"datasets": [], **record_data, "metrics": [], "tags": {}, "artifacts": []}
                     if self.record is not None and record_data is not None else None)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (default 0) in one ``log_batch``; None/NaN skipped."""
        batch = _metrics(metrics, step)
        if batch:
            with self._tracker._locked():
                self._tracker._log_batch(self.run_id, metrics=batch)
            if self._rec is not None:
                self._rec["metrics"].extend(_metric_row(m) for m in batch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log more params (flattened); MLflow rejects changing an existing param's value."""
        flat = flatten_params(params)
        with self._tracker._locked():
            self._tracker._log_batch(self.run_id, params=flat)
        if self._rec is not None:
            self._rec["params"].update(flat)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified, truncated to MLflow's limit)."""
        batch = {str(k): _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
        with self._tracker._locked():
            self._tracker._log_batch(self.run_id, tags=batch)
        if self._rec is not None:
            self._rec["tags"].update(batch)

    def log_artifact(self, path: PathLike, artifact_path: str | None = None) -> None:
        """Upload a file or directory to the run's artifacts (under ``artifact_path``)."""
        with self._tracker._locked():
            self._tracker._client.log_artifact(self.run_id, str(path), artifact_path)
        if self._rec is not None:
            self._rec["artifacts"].append([_artifact_ref(path, self.record), artifact_path])

    def log_datasets(self, paths: Sequence[PathLike], context: str = "training") -> None:
        """Log dataset files as the run's MLflow inputs (name, file digest, source path)."""
        entries = [dataset_entry(p, context=context) for p in paths]
        if entries:
            with self._tracker._locked():
                self._tracker._client.log_inputs(self.run_id, datasets=_dataset_inputs(entries))
            if self._rec is not None:
                self._rec["datasets"].extend(entries)

    def end(self, status: str = "FINISHED") -> None:
        """Terminate the run (idempotent); called by the context manager. Ends the cell's parent
        run too when no other job of the cell runs. A FINISHED run with a record path writes
        its record."""
        if self.status is not None:
            return
        end = _now_ms()
        with self._tracker._locked():
            self._tracker._client.set_terminated(self.run_id, status, end_time=end)
            eid = self.experiment_id or self._tracker._client.get_run(self.run_id).info.experiment_id
            self._tracker._settle_cell(eid, self.parent_run_id)
        self.status = status
        if self._rec is not None and status == "FINISHED":
            _write_record(self.record, {**self._rec, "status": status, "end_time": end})

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


# --------------------------------------------------------------------------- rebuild


def rebuild(results_dir: PathLike, uri: str | None = None, *, lock_timeout: float = LOCK_TIMEOUT_S) -> dict[str, Any]:
    """Restore the MLflow runs recorded under ``results_dir`` into the store, without training.

    Every run record (:mod:`hrq.runrecords`) whose output still exists is replayed: its
    experiment, the cell's parent run (created if missing), the job's child run with its params,
    tags, every metric point (per-epoch curves included, original steps and timestamps), status
    and start/end times, and the artifacts it uploaded that still exist. Runs get new MLflow ids
    (the first one is kept as tag ``hrq.original_run_id``) and tag ``hrq.rebuilt_from``.

    Idempotent: a record whose id a live run already carries is skipped, so running it twice, or
    on an intact store, adds nothing. A live run of the same job that is not from the record (an
    older run) is replaced, as a rerun of the job would.

    Returns counts: ``restored``, ``present``, ``running`` (a job's run is in progress: left
    alone), ``stale`` (record whose output is gone), ``unreadable`` (list of ``(path, reason)``).
    """
    results_dir = Path(results_dir)
    uri = uri or default_tracking_uri(results_dir)
    init_store(uri, results_dir, lock_timeout=lock_timeout)
    tracker = Tracker(uri, results_dir, lock_timeout=lock_timeout)
    report: dict[str, Any] = {"uri": uri, "restored": 0, "present": 0, "running": 0, "stale": 0, "unreadable": []}
    loaded = []
    for path in find_records(results_dir):
        try:
            record = read_record(path)
        except ValueError as exc:
            report["unreadable"].append((str(path), str(exc)))
            continue
        if not record_output(path, record).exists():
            report["stale"] += 1
            continue
        loaded.append((record.get("start_time") or record.get("end_time") or 0, str(path), record))
    for _, path, record in sorted(loaded, key=lambda t: (t[0], t[1])):
        report[tracker.restore(record, path)] += 1
    return report


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m hrq.tracking",
        description="Maintain the pipeline's MLflow store.")
    sub = ap.add_subparsers(dest="command", required=True)
    rb = sub.add_parser(
        "rebuild", help="restore the runs recorded under RESULTS_DIR (the run records beside each job's "
                        "outputs) into the MLflow store, without training; idempotent")
    rb.add_argument("results_dir", help="the workflow's results_dir, e.g. results/")
    rb.add_argument("--uri", default=None,
                    help="tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///RESULTS_DIR/mlflow.db)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.results_dir).is_dir():
        print(f"error: {args.results_dir} is not a directory", file=sys.stderr)
        return 2
    report = rebuild(args.results_dir, args.uri)
    restored = "1 run" if report["restored"] == 1 else f"{report['restored']} runs"
    print(f"MLflow store {report['uri']}: {restored} restored from the run records under "
          f"{args.results_dir}, {report['present']} already present"
          + (f", {report['running']} left alone (a run of the same job is in progress)" if report["running"] else "")
          + (f", {report['stale']} ignored (their outputs are gone)" if report["stale"] else "") + ".")
    for path, reason in report["unreadable"]:
        print(f"warning: skipped {reason}", file=sys.stderr)
    return 1 if report["unreadable"] else 0


if __name__ == "__main__":
    raise SystemExit(_main())
