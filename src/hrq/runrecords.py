"""Run records: what each tracked job logged to MLflow, kept next to the job's outputs.

The MLflow store (``results/mlflow.db``) is a cache of the runs, not their only copy. Every
run the pipeline logs through :class:`hrq.tracking.Tracker` with a record path also writes,
when it finishes, a JSON *run record* beside the output it belongs to:

* ``<output>.mlflow.json`` for a job's child run (``tokens.parquet.mlflow.json`` next to
  ``tokens.parquet``) or a cell's parent run (``k3_s16_h8.parquet.mlflow.json``);
* ``<output>.<name>.mlflow.json`` when one job logs several runs (Figure 4: one per method).

A record holds the experiment, the cell, the job key and run name, every param and tag the job
logged, every metric point (key, value, timestamp, step: the per-epoch curves included), the
run's status and start/end times, and the artifacts it uploaded (paths relative to the record).
``python -m hrq.tracking rebuild results/`` replays them into a new or emptied store.

A record shares its output's fate: a rerun of the job deletes it before training and writes a
new one at the end; a record whose output is gone is ignored.

This module imports neither MLflow nor pandas, so the workflow can check the store cheaply
each time it starts (:func:`store_warning`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "RECORD_FORMAT",
    "RECORD_SUFFIX",
    "default_tracking_uri",
    "find_records",
    "read_record",
    "record_output",
    "recorded_run_count",
    "run_record_path",
    "store_warning",
]

RECORD_SUFFIX = ".mlflow.json"
RECORD_FORMAT = "hrq.mlflow-run/1"
TAG_RECORD = "hrq.record_id"  # on every run logged with a record: the record's id

PathLike = str | os.PathLike[str]


def default_tracking_uri(results_dir: PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` if set (and non-empty), else ``sqlite:///<abs results_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return "sqlite:///" + str(Path(results_dir).resolve() / "mlflow.db")


def run_record_path(key: PathLike) -> Path:
    """The record path for a job key that is an output path, optionally ``<path>#<name>``:
    ``a/tokens.parquet`` -> ``a/tokens.parquet.mlflow.json``,
    ``a/fig.png#hrq`` -> ``a/fig.png.hrq.mlflow.json``."""
    output, _, name = str(key).partition("#")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path(f"{output}.{name}{RECORD_SUFFIX}" if name else f"{output}{RECORD_SUFFIX}")


def record_output(record_path: PathLike, record: dict[str, Any]) -> Path:
    """The output file a record belongs to (it must exist for the record to count)."""
    return Path(record_path).parent / record["output"]


def read_record(path: PathLike) -> dict[str, Any]:
    """A run record, validated enough to replay. Raises ``ValueError`` naming the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable run record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: not a run record of format {RECORD_FORMAT!r}")
    missing = [k for k in ("kind", "record_id", "experiment", "cell", "output", "metrics") if k not in record]
    if record.get("kind") == "job":
        missing += [k for k in ("job_key", "run_name", "params", "status") if k not in record]
    if missing or record.get("kind") not in ("job", "cell"):
        raise ValueError(f"{path}: run record lacks {missing or 'a valid kind'}")
    return record


def find_records(results_dir: PathLike) -> Iterator[Path]:
    """Every run record under ``results_dir`` (hidden temporary files excluded), sorted."""
    root = Path(results_dir)
    if not root.is_dir():
        return iter(())
    return iter(sorted(p for p in root.rglob(f"*{RECORD_SUFFIX}") if not p.name.startswith(".")))


def sqlite_db_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI, None for other or in-memory URIs (here, not
    in :mod:`hrq.tracking`, so the workflow's start-up check needs no MLflow import)."""
    if not uri.startswith("sqlite://"):
        return None
    rest = uri[len("sqlite://") :].split("?", 1)[0]
    # sqlite:///rel.db -> "/rel.db" (relative), sqlite:////abs.db -> "//abs.db" (absolute)
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:]).resolve()


def recorded_run_count(uri: str) -> int | None:
    """Live (not deleted) runs in a sqlite store that carry a run record id: 0 when the file is
    missing or has no schema, None when that cannot be told cheaply (not sqlite, locked,
    unreadable)."""
    db = sqlite_db_path(uri)
    if db is None:
        return None
    if not db.exists() or db.stat().st_size == 0:
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"runs", "tags"} <= tables:
                return 0
            return int(con.execute(
                "SELECT count(DISTINCT r.run_uuid) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "WHERE r.lifecycle_stage = 'active' AND t.key = ?", (TAG_RECORD,)).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return None


def _has_output(record_path: Path) -> bool:
    """Whether a record's output exists, told from its name alone (no parsing)."""
    stem = record_path.name[: -len(RECORD_SUFFIX)]
    return (record_path.parent / stem).exists() or (
        "." in stem and (record_path.parent / stem.rsplit(".", 1)[0]).exists())


def store_warning(uri: str, results_dir: PathLike) -> str | None:
    """What to tell a user whose MLflow store is missing runs that ``results_dir`` holds
    records of (a deleted or emptied store: Snakemake sees the outputs and reruns nothing);
    None when the store has them all, or cannot be checked cheaply (not a sqlite file)."""
    in_store = recorded_run_count(uri)
    if in_store is None:
        return None
    recorded = sum(1 for p in find_records(results_dir) if _has_output(p))
    if in_store >= recorded:
        return None
    db = sqlite_db_path(uri)
    if db is None or not db.exists():
        state = "does not exist"
    elif in_store == 0:
        state = "holds none of them"
    else:
        state = f"holds only {in_store} of them"
    runs = "1 finished MLflow run" if recorded == 1 else f"{recorded} finished MLflow runs"
    them = "its output is up to date, so Snakemake will not rerun it" if recorded == 1 else \
        "their outputs are up to date, so Snakemake will not rerun them"
    return (f"{results_dir} holds {runs}, but the store {uri} {state}; {them}. Restore the runs without "
            f"training: python -m hrq.tracking rebuild {results_dir}")
