"""A job-side guard against orphaned jobs racing their own rerun.

When Snakemake itself is killed (``kill -9``, a lost login session), the jobs it started keep
running. After ``snakemake --unlock`` the rerun starts the same jobs again (their outputs are
incomplete), and each old job would race its new copy to the same outputs.

:class:`OutputClaim` makes the newest job win. A stage process (``python -m hrq.stages``)
claims its job's first output by writing a token to ``.<output name>.owner`` beside it
(host, pid, stage, start time) and checks that file every :data:`POLL_S` seconds. When another
process has claimed the output since (the file holds another token, or is gone: only its
owner removes it, when it ends), this one is orphaned: the claim raises
:class:`OrphanedJob` in the main thread (a :class:`BaseException`, so no ``except Exception``
swallows it; atomic writes in flight are discarded), and the stage exits with
:data:`EXIT_ORPHANED` after saying which job took over. The owner file is removed when the
job ends while it still holds the claim.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["EXIT_ORPHANED", "OrphanedJob", "OutputClaim", "owner_path"]

EXIT_ORPHANED = 75  # EX_TEMPFAIL: nothing is wrong with the job, a newer copy of it runs
POLL_S = float(os.environ.get("HRQ_GUARD_POLL_S", "10"))
_SIGNAL = signal.SIGUSR1


class OrphanedJob(BaseException):
    """Raised in a job whose outputs a newer job has claimed."""


def owner_path(output: str | os.PathLike[str]) -> Path:
    """The claim file of an output: ``.<name>.owner`` in the output's directory."""
    output = Path(output)
    return output.with_name(f".{output.name}.owner")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class OutputClaim:
    """Claim the first of a job's ``outputs`` for this process while it runs (a context
    manager used in the main thread); see the module docstring."""

    def __init__(self, outputs: Mapping[str, Any], stage: str, *, poll_s: float | None = None):
        paths = [p for v in outputs.values() for p in ([v] if isinstance(v, str) else v)]
        self.output = Path(paths[0]) if paths else None
        self.path = owner_path(paths[0]) if paths else None
        self.stage = stage
        self.poll_s = POLL_S if poll_s is None else poll_s
        self.token = uuid.uuid4().hex
        self.taken_by: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._old_handler: Any = None

    def _write(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "stage": self.stage,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{self.token[:8]}")
        tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            owner = _read(self.path)
            if owner is None and self.path.exists():
                continue  # being replaced right now: look again
            if owner is None or owner.get("token") != self.token:
                # Claimed by a newer job, or claimed and released already (only the claim's
                # owner removes the file).
                self.taken_by = owner or {}
                os.kill(os.getpid(), _SIGNAL)
                return

    def _on_signal(self, signum, frame) -> None:
        if self.taken_by is not None and not self._stop.is_set():
            raise OrphanedJob(self.message())

    def message(self) -> str:
        o = self.taken_by or {}
        who = (f"is now being built by another job (pid {o.get('pid')} on {o.get('host')}, {o.get('stage')}, "
               f"started {o.get('started')})" if o else
               f"was claimed by another job, which has already ended ({self.path.name} no longer holds this "
               f"job's claim)")
        return (f"{self.output} {who}; "
                f"this job (pid {os.getpid()}) was orphaned, e.g. its Snakemake was killed, and exits without "
                f"writing its outputs")

    def __enter__(self) -> OutputClaim:
        if self.path is None:
            return self
        self._write()
        if threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(_SIGNAL, self._on_signal)
            self._thread = threading.Thread(target=self._watch, name="hrq-output-claim", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.path is None:
            return False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            signal.signal(_SIGNAL, self._old_handler if self._old_handler is not None else signal.SIG_DFL)
        owner = _read(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)
        return False


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main_guarded(stage: str, outputs: Mapping[str, Any], run) -> None:
    """Run ``run()`` holding the claim; an orphaned job prints why and exits
    :data:`EXIT_ORPHANED`.

    SIGTERM (``kill <pid>``, ``scancel``, a Slurm time limit) unwinds the job instead of
    ending it on the spot: atomic writes in flight remove their temporary files and the MLflow
    run is marked KILLED; the exit status is 143."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with OutputClaim(outputs, stage):
            run()
    except OrphanedJob as exc:
        print(f"[hrq] {stage}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_ORPHANED) from None
