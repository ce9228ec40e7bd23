"""Atomic artifact I/O for the pipeline.

Every output a pipeline job produces is written to a hidden temporary file in the
*same directory* as the target and then moved into place with :func:`os.replace`
(atomic on POSIX within one file system). A job that is killed mid-write therefore
never leaves a half-written file under the target's name: either the complete old
state (no file) or the complete new file is visible.

Temporary names look like ``.<target name>.tmp-<pid>-<8 hex chars><target suffix>``,
e.g. ``.table1.parquet.tmp-4242-1a2b3c4d.parquet``. They start with ``.`` so that
Snakemake wildcards and shell/:mod:`glob` patterns ignore them, and they keep the
target's suffix so writers that dispatch on the extension still work. An exception
(including :class:`KeyboardInterrupt`) inside :func:`atomic_output` removes the
temporary file; only ``SIGKILL``/power loss can leave one behind, and
:func:`cleanup_stale_temps` removes those.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_output",
    "cleanup_stale_temps",
    "read_parquet",
    "temp_path_for",
    "write_json",
    "write_parquet",
    "write_text",
]

_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)-(?P<token>[0-9a-f]{8})(?P<suffix>\.[^./]*)?$")


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary path next to ``path`` (the file is not created)."""
    path = Path(path)
    name = f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}"
    return path.with_name(name)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable. Not possible everywhere (e.g. some network
    # file systems, Windows); the rename is still atomic without it.
    with contextlib.suppress(OSError):
        _fsync_path(directory)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; publish it atomically.

    Creates ``path``'s parent directories. The body must create the yielded path (a
    regular file). On normal exit the file is fsynced and ``os.replace``-d onto
    ``path``; on any exception (``KeyboardInterrupt`` included) the temporary file is
    removed, ``path`` is left untouched and the exception propagates.

    >>> with atomic_output("out/table.parquet") as tmp:   # doctest: +SKIP
    ...     df.to_parquet(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(
                f"atomic_output({str(path)!r}): the body did not write the temporary file {str(tmp)!r}"
            )
        if tmp.is_file():
            _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(path.parent)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``df`` to ``path`` as parquet (pyarrow engine), atomically. Extra kwargs go to
    :meth:`pandas.DataFrame.to_parquet`."""
    path = Path(path)
    kwargs.setdefault("engine", "pyarrow")
    with atomic_output(path) as tmp:
        df.to_parquet(tmp, **kwargs)
    return path


def write_text(text: str, path: str | os.PathLike[str], encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)
    return path


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as JSON (sorted keys, indent 2, trailing newline) to ``path`` atomically."""
    return write_text(json.dumps(obj, sort_keys=True, indent=2) + "\n", path)


def read_parquet(path: str | os.PathLike[str], **kwargs: Any) -> pd.DataFrame:
    """Read a parquet file, with errors that name the file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` exists but is not readable parquet (truncated, empty, not
            parquet). Such a file may be a partial write left by an older tool or an
            interrupted job that did not write atomically.
    """
    import pyarrow as pa

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parquet file not found: {str(path)!r}")
    kwargs.setdefault("engine", "pyarrow")
    try:
        return pd.read_parquet(path, **kwargs)
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        size = path.stat().st_size if path.is_file() else None
        raise ValueError(
            f"cannot read parquet file {str(path)!r}"
            + (f" ({size} bytes)" if size is not None else "")
            + f": {type(exc).__name__}: {exc}. The file may be a partial write from an older "
            "tool or an interrupted job; delete it and rerun the job that produces it."
        ) from exc


def cleanup_stale_temps(
    directory: str | os.PathLike[str],
    max_age_s: float = 3600.0,
    *,
    recursive: bool = False,
) -> list[Path]:
    """Remove temporary files left by :func:`atomic_output` in killed processes.

    Only names matching the temporary-name pattern (``.<name>.tmp-<pid>-<hex8>[suffix]``)
    whose modification time is at least ``max_age_s`` seconds old are removed, so a
    temp that a live job is still writing (its mtime keeps moving) survives as long
    as ``max_age_s`` exceeds the longest pause between its writes. Returns the removed
    paths. A missing ``directory`` is not an error.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time()
    removed: list[Path] = []
    candidates = directory.rglob(".*") if recursive else directory.glob(".*")
    for p in candidates:
        if not _TEMP_RE.match(p.name):
            continue
        try:
            age = now - p.lstat().st_mtime
        except FileNotFoundError:
            continue
        if age >= max_age_s:
            _remove(p)
            removed.append(p)
    return sorted(removed)
