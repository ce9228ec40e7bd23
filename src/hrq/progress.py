"""Per-job progress on the Snakemake console.

A training stage's per-epoch callback (:func:`hrq.stages.common.epoch_logger`) writes a tiny JSON
file beside the job's log, ``<log>.progress`` (atomically: epoch, total, elapsed, ETA). The
Snakefile's ``onstart`` starts :func:`start_monitor`, a daemon thread in the Snakemake process
that every ``HRQ_PROGRESS_SECONDS`` (default 20; 0 turns it off) prints one line per running job
through Snakemake's logger, next to its "N of M steps":

    [progress] tokenize_hierarchy synthetic_taxonomy/hrq/k3_s16_h8/seed0: epoch 12/40, 0:21 elapsed, ETA 0:49

A job's label is its log's path under the logs directory. A progress file is removed when its
stage process exits (``python -m hrq.stages``); one not updated for a long while (a killed job)
is ignored. Files that vanish or are half-written are skipped: the monitor never fails a run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["ProgressWriter", "format_duration", "format_line", "progress_path", "read_progress",
           "running_lines", "start_monitor", "stop_monitor"]

SUFFIX = ".progress"


def progress_path(log: str | os.PathLike[str]) -> Path:
    """The progress file of a job's log: ``<log>.progress``."""
    log = Path(log)
    return log.with_name(log.name + SUFFIX)


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` from one hour on, else ``m:ss``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class ProgressWriter:
    """Writes ``<log>.progress`` after each epoch. ``total``: the epochs this training runs
    (None: unknown, no ETA); ``what``: an optional phase name (e.g. the method of a figure
    panel)."""

    def __init__(self, path: str | os.PathLike[str], total: int | None = None, what: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.total = total
        self.what = what
        self.clock = clock
        self.start = clock()

    def record(self, epoch: int) -> dict[str, Any]:
        """The record after 0-based ``epoch`` finished."""
        now = self.clock()
        done = epoch + 1
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if self.total and done > 0 else None
        return {"epoch": done, "total": self.total, "elapsed": elapsed,
                "eta": None if eta is None else max(eta, 0.0), "updated": now, "what": self.what,
                "pid": os.getpid()}

    def update(self, epoch: int) -> None:
        """Write the record of 0-based ``epoch``; never raises (progress is best effort)."""
        try:
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.record(epoch)), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


def job_progress(total: int | None, what: str | None = None) -> ProgressWriter | None:
    """A writer for the current job: its log is this process's stdout (the workflow's
    ``> {log} 2>&1``); None when stdout is no log file (a notebook, a test)."""
    from hrq.attemptlog import stdout_log

    log = stdout_log()
    return None if log is None else ProgressWriter(progress_path(log), total, what)


def clear_job_progress() -> None:
    """Remove the current job's progress file (the stage process is exiting)."""
    from hrq.attemptlog import stdout_log

    log = stdout_log()
    if log is not None:
        try:
            progress_path(log).unlink(missing_ok=True)
        except OSError:
            pass


def read_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A progress file's record, or None when it is gone or unreadable."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "epoch" in rec else None


def job_label(path: str | os.PathLike[str], logs_dir: str | os.PathLike[str]) -> str:
    """``rule rest/of/log/path`` from ``<logs_dir>/<rule>/<rest>.log.progress``."""
    path = Path(path)
    try:
        rel = path.relative_to(logs_dir)
    except ValueError:
        rel = Path(path.name)
    text = rel.as_posix().removesuffix(SUFFIX).removesuffix(".log")
    rule, _, rest = text.partition("/")
    return f"{rule} {rest}" if rest else rule


def format_line(label: str, rec: Mapping[str, Any], now: float | None = None) -> str:
    """One console line for a job's progress record."""
    epoch, total = rec.get("epoch"), rec.get("total")
    what = f" {rec['what']}" if rec.get("what") else ""
    count = f"epoch {epoch}/{total}" if total else f"epoch {epoch}"
    elapsed = rec.get("elapsed")
    if now is not None and rec.get("updated") is not None and elapsed is not None:
        elapsed = elapsed + max(0.0, now - rec["updated"])  # time since the last epoch ended
    parts = [f"[progress] {label}{what}: {count}", f"{format_duration(elapsed)} elapsed"]
    if total:
        parts.append(f"ETA {format_duration(rec.get('eta'))}")
    return ", ".join(parts)


def running_lines(logs_dir: str | os.PathLike[str], now: float | None = None,
                  stale_seconds: float = 1800.0) -> list[str]:
    """The lines of the jobs with a progress file under ``logs_dir`` updated within
    ``stale_seconds`` (or within 3 epochs' time, whichever is longer), sorted by label."""
    now = time.time() if now is None else now
    lines = []
    try:
        files = sorted(Path(logs_dir).rglob(f"*{SUFFIX}"))
    except OSError:
        return []
    for f in files:
        rec = read_progress(f)
        if rec is None:
            continue
        per_epoch = (rec.get("elapsed") or 0.0) / max(int(rec.get("epoch") or 1), 1)
        if now - float(rec.get("updated", 0.0)) > max(stale_seconds, 3 * per_epoch):
            continue
        lines.append(format_line(job_label(f, logs_dir), rec, now))
    return sorted(lines)


_monitor: tuple[threading.Thread, threading.Event] | None = None


def start_monitor(logs_dir: str | os.PathLike[str], emit: Callable[[str], None],
                  interval: float | None = None) -> threading.Thread | None:
    """Print :func:`running_lines` through ``emit`` every ``interval`` seconds (default
    ``HRQ_PROGRESS_SECONDS`` or 20; 0 turns it off) from a daemon thread, which never blocks the
    process's exit; a tick without any change since the last one prints nothing."""
    global _monitor
    if interval is None:
        try:
            interval = float(os.environ.get("HRQ_PROGRESS_SECONDS", "20"))
        except ValueError:
            interval = 20.0
    if interval <= 0 or _monitor is not None:
        return None
    stop = threading.Event()

    def loop() -> None:
        last: list[str] = []
        while not stop.wait(interval):
            try:
                lines = running_lines(logs_dir)
                keys = [line.split(", ")[0] for line in lines]  # epoch changes, not the clock
                if lines and keys != last:
                    for line in lines:
                        emit(line)
                last = keys
            except Exception:  # noqa: BLE001 - progress must never disturb the run
                pass

    thread = threading.Thread(target=loop, name="hrq-progress", daemon=True)
    thread.start()
    _monitor = (thread, stop)
    return thread


def stop_monitor() -> None:
    """Stop the monitor thread (onsuccess/onerror); it exits at its next wake-up."""
    global _monitor
    if _monitor is not None:
        _monitor[1].set()
        _monitor = None
