"""Fetch raw dataset files once, verify them, and never trust a partial download.

:func:`ensure_file` is the only way the readers get their raw files. A file that is already
in place is verified and used without touching the network, so machines without internet
work as long as someone put the file there by hand. Downloads stream into a hidden
temporary file next to the target (:func:`hrq.io.atomic_output`) and are renamed into place
only after the checksum matched, so an interrupted or corrupted download never shows up
under the target's name.

Where the publisher gives no checksum (the Amazon 2014 files on SNAP), the first download is
trusted: its SHA-256 goes to a ``<file>.sha256`` sidecar (``sha256sum`` format, so
``sha256sum -c`` works in that directory) and every later use is verified against it.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import time
import urllib.request
from pathlib import Path

from tqdm import tqdm

from hrq.io import atomic_output, write_text

__all__ = ["ChecksumError", "DownloadError", "ensure_file", "file_digests", "sidecar_path"]

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough to keep memory flat

# Errors that mean "the transfer failed" (URLError, socket timeouts and connection resets
# are OSErrors; a server closing mid-body raises http.client.IncompleteRead). A bad URL
# without a scheme is a ValueError from urllib.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says where to put it by hand."""


class ChecksumError(RuntimeError):
    """A file's content does not match its expected digest."""


def sidecar_path(path: str | Path) -> Path:
    """The trust-on-first-use digest file of ``path``: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def file_digests(path: str | Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of ``path``'s content for each hashlib algorithm, read in 1 MiB chunks."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def _expected_digests(path: Path, md5: str | None, sha256: str | None) -> tuple[dict[str, str], str]:
    """The digests ``path`` must have and where they come from ("published" or the sidecar)."""
    published = {name: d.lower() for name, d in (("md5", md5), ("sha256", sha256)) if d}
    if published:
        return published, "published"
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8").split()
        if not text:
            raise ChecksumError(f"checksum sidecar {str(sidecar)!r} is empty; delete it and {str(path)!r} "
                                "to download again")
        return {"sha256": text[0].lower()}, f"recorded in {sidecar}"
    return {}, "none"


def _mismatches(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    return [f"{name} expected {expected[name]}, actual {actual[name]}"
            for name in expected if actual[name] != expected[name]]


def _record_first_use(path: Path, sha256: str, url: str) -> None:
    logger.warning(
        "no published checksum for %s; trusting the file on first use and recording its sha256 %s in %s "
        "(later uses are verified against it)", url, sha256, sidecar_path(path))
    write_text(f"{sha256}  {path.name}\n", sidecar_path(path))


def _manual_hint(path: Path, expected: dict[str, str]) -> str:
    digests = ", ".join(f"{name} {d}" for name, d in expected.items())
    return (f"download it on a machine with internet access and put it at {path}"
            + (f" (expected {digests})" if digests else ""))


def ensure_file(url: str, path: str | Path, *, md5: str | None = None, sha256: str | None = None,
                timeout: float = 60, retries: int = 2, retry_wait: float = 5.0) -> Path:
    """Return ``path``, downloading it from ``url`` first if it is missing; verify its checksum.

    Args:
        url: where to download from (http(s):// or file://).
        path: where the file lives; its parent directories are created.
        md5, sha256: published hex digests (any that are given must all match). With neither,
            the SHA-256 of the first download (or of a file found in place) is recorded in
            ``<path>.sha256`` and later uses are checked against it.
        timeout: seconds for connecting and for each read.
        retries: how many times a failed transfer (:class:`DownloadError`: network error,
            truncated body) is tried again, after ``retry_wait`` seconds, doubling. This is the
            only retry a download gets: the workflow's data rules are not retried, because
            their other failures (a malformed file) are deterministic.

    Raises:
        ChecksumError: the existing file, or the downloaded content, has the wrong digest.
        DownloadError: the download failed (no network, HTTP error, truncated transfer).
    """
    path = Path(path)
    expected, source = _expected_digests(path, md5, sha256)
    algorithms = tuple(expected) or ("sha256",)

    if path.exists():
        actual = file_digests(path, algorithms)
        if not expected:
            _record_first_use(path, actual["sha256"], url)
        elif bad := _mismatches(expected, actual):
            raise ChecksumError(
                f"{path} has the wrong checksum ({'; '.join(bad)}; {source}). It is corrupt or a different "
                f"version: delete it (and {sidecar_path(path).name} if present) to download it again from "
                f"{url}, or replace it with the right file.")
        return path

    wait = retry_wait
    for attempt in range(retries + 1):
        try:
            actual = _download(url, path, expected, source, algorithms, timeout)
            break
        except DownloadError as exc:
            if attempt == retries:
                raise
            logger.warning("%s Trying again in %.0f s (try %d of %d).", exc, wait, attempt + 2, retries + 1)
            time.sleep(wait)
            wait *= 2
    if not expected:
        _record_first_use(path, actual["sha256"], url)
    return path


def _download(url: str, path: Path, expected: dict[str, str], source: str, algorithms: tuple[str, ...],
              timeout: float) -> dict[str, str]:
    """Stream ``url`` into ``path`` atomically; the digests of what was received."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    received = 0
    with atomic_output(path) as tmp, open(tmp, "wb") as out:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except _NETWORK_ERRORS as exc:
            raise DownloadError(f"cannot download {url}: {exc}. Alternatively, "
                                f"{_manual_hint(path, expected)}.") from exc
        with response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except _NETWORK_ERRORS as exc:
                        raise DownloadError(f"download of {url} failed after {received} bytes: {exc}. "
                                            f"Alternatively, {_manual_hint(path, expected)}.") from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    for h in hashes.values():
                        h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        # Without a published checksum this is the only guard against a silently cut transfer.
        if total is not None and received != total:
            raise DownloadError(f"download of {url} is truncated: {received} of {total} bytes. "
                                f"Try again, or {_manual_hint(path, expected)}.")
        actual = {name: h.hexdigest() for name, h in hashes.items()}
        if bad := _mismatches(expected, actual):
            raise ChecksumError(f"the content downloaded from {url} has the wrong checksum ({'; '.join(bad)}; "
                                f"{source}); nothing was written to {path}.")
    return actual
