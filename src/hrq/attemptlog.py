"""Keep the log of every failed or killed attempt of a job, across Snakemake's retries.

Snakemake deletes a job's declared ``log:`` before each attempt, so with ``retries: 1`` the log
of an attempt that was killed (out of memory, a lost node, a time limit) would be gone when its
retry starts. A stage process (``python -m hrq.stages``) whose stdout is a ``*.log`` file (the
workflow's ``> {log} 2>&1``) therefore, when it starts:

* hard-links that file as ``<log>.attempt-<UTC start>-<pid>``: the attempt's output stays
  reachable under that name when Snakemake deletes ``<log>``, whatever kills the attempt;
* writes a header line (stage, UTC start, host, pid) and, on a retry, the names of the earlier
  attempts' kept logs.

An attempt that succeeds removes its link, one that fails says so at the end of its log: the
links left are exactly the logs of attempts that failed or were killed
(``find results -name '*.log.attempt-*'``). Where the log is no regular file, cannot be found
through ``/proc/self/fd/1`` (Linux) or cannot be hard-linked, the stage runs without one.

This lives in the stage process rather than in the rules' shell command on purpose: Snakemake
reruns every job whose shell command changed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["attempt_log", "stdout_log"]


def stdout_log() -> Path | None:
    """The ``*.log`` file this process's stdout writes to, if it is one (else None)."""
    try:
        st = os.fstat(sys.stdout.fileno())
        path = Path(os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}"))
    except (OSError, ValueError, AttributeError):
        return None
    if not stat.S_ISREG(st.st_mode) or not path.is_absolute() or path.suffix != ".log":
        return None
    try:
        same = os.stat(path).st_ino == st.st_ino  # not " (deleted)", not replaced since
    except OSError:
        return None
    return path if same else None


@contextlib.contextmanager
def attempt_log(stage: str, log: Path | None = None) -> Iterator[Path | None]:
    """Keep this attempt's ``log`` (default: :func:`stdout_log`) until it succeeds; yields the
    kept link (None when there is none). See the module docstring."""
    log = stdout_log() if log is None else log
    started = time.gmtime()
    kept = None
    earlier: list[str] = []
    if log is not None:
        kept = log.with_name(f"{log.name}.attempt-{time.strftime('%Y%m%dT%H%M%SZ', started)}-{os.getpid()}")
        try:
            os.link(log, kept)
        except OSError:
            kept = None
        earlier = sorted(p.name for p in log.parent.glob(f"{log.name}.attempt-*") if p != kept)
    print(f"[hrq] {stage}: attempt started {time.strftime('%Y-%m-%dT%H:%M:%SZ', started)} on "
          f"{socket.gethostname()} (pid {os.getpid()})", file=sys.stderr, flush=True)
    if earlier:
        print(f"[hrq] logs of earlier failed or killed attempts, beside this one: {', '.join(earlier)}",
              file=sys.stderr, flush=True)
    try:
        yield kept
    except BaseException as exc:
        if kept is not None:
            why = f"exit status {exc.code}" if isinstance(exc, SystemExit) else type(exc).__name__
            print(f"[hrq] {stage}: failed ({why}); this attempt's log is kept as {kept.name}",
                  file=sys.stderr, flush=True)
        raise
    else:
        if kept is not None:
            kept.unlink(missing_ok=True)
