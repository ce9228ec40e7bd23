"""Tests for hrq.io: atomic writes, readable errors, survival of a SIGKILLed writer."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrq.io import (
    atomic_output,
    cleanup_stale_temps,
    read_parquet,
    temp_path_for,
    write_json,
    write_parquet,
    write_text,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _frame(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "method": [f"m{i % 3}" for i in range(n)],
            "k": np.arange(n, dtype=np.int64),
            "score": rng.normal(size=n),
            "codes": [[int(j) for j in rng.integers(0, 64, size=i % 5)] for i in range(n)],
        }
    )


def test_parquet_round_trip_with_list_columns(tmp_path):
    df = _frame()
    target = tmp_path / "a" / "b" / "table.parquet"  # parents are created
    assert write_parquet(df, target) == target
    back = read_parquet(target)
    assert list(back.columns) == list(df.columns)
    pd.testing.assert_frame_equal(back.drop(columns="codes"), df.drop(columns="codes"))
    assert [list(map(int, c)) for c in back["codes"]] == list(df["codes"])
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.parquet"]


def test_text_and_json(tmp_path):
    write_text("héllo\r\nworld", tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\r\nworld".encode()
    write_json({"b": 1, "a": [1, 2]}, tmp_path / "j.json")
    raw = (tmp_path / "j.json").read_text()
    assert raw == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert json.loads(raw) == {"a": [1, 2], "b": 1}
    # overwrite replaces the whole content
    write_text("x", tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.json", "t.txt"]


def test_temp_name_is_hidden_and_keeps_suffix(tmp_path):
    tmp = temp_path_for(tmp_path / "table.parquet")
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".table.parquet.tmp-")
    assert f"-{os.getpid()}-" in tmp.name
    assert tmp.suffix == ".parquet"
    assert temp_path_for(tmp_path / "table.parquet") != tmp


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_leaves_nothing(tmp_path, exc_type):
    target = tmp_path / "out.parquet"
    with pytest.raises(exc_type):
        with atomic_output(target) as tmp:
            _frame().to_parquet(tmp)
            assert tmp.exists()
            raise exc_type("boom")
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_previous_version(tmp_path):
    target = tmp_path / "out.txt"
    write_text("old", target)
    with pytest.raises(ValueError):
        with atomic_output(target) as tmp:
            tmp.write_text("new, half written")
            raise ValueError
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_body_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="did not write"):
        with atomic_output(tmp_path / "x.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_read_parquet_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.parquet"
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_parquet(missing)

    good = tmp_path / "good.parquet"
    write_parquet(_frame(), good)
    data = good.read_bytes()
    for name, content in [("trunc.parquet", data[: len(data) // 2]), ("empty.parquet", b""),
                          ("text.parquet", b"not parquet at all")]:
        bad = tmp_path / name
        bad.write_bytes(content)  # a non-atomic partial write, as an older tool could leave
        with pytest.raises(ValueError, match=name) as info:
            read_parquet(bad)
        assert "partial write" in str(info.value)


_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {src!r})
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    from hrq.io import atomic_output

    target, chunks, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rng = np.random.default_rng(0)
    table = pa.table({{"x": rng.normal(size=50_000), "codes": [[1, 2, 3]] * 50_000}})
    with atomic_output(target) as tmp:
        with pq.ParquetWriter(tmp, table.schema) as writer:
            for i in range(chunks):
                writer.write_table(table)  # one row group per chunk
                if i == 0:
                    print("started", tmp, flush=True)
                time.sleep(delay)
    print("done", flush=True)
    """
)


def _run_writer(target: Path, chunks: int, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER.format(src=SRC), str(target), str(chunks), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_writer_leaves_no_target_and_rerun_succeeds(tmp_path):
    target = tmp_path / "out" / "big.parquet"
    proc = _run_writer(target, chunks=10_000, delay=0.05)
    try:
        line = proc.stdout.readline()
        assert line.startswith("started "), (line, proc.stderr.read() if proc.poll() is not None else "")
        tmp = Path(line.split(" ", 1)[1].strip())
        # let it write a few more row groups so the temp is genuinely mid-write
        deadline = time.monotonic() + 10
        while tmp.stat().st_size < 2_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "writer finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=600) == -signal.SIGKILL  # hang guard only
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()

    assert not target.exists()
    leftovers = list(target.parent.iterdir())
    # no finalizer runs on SIGKILL, so the temp may survive -- but it must be hidden
    assert leftovers == [tmp] and tmp.name.startswith(".") and tmp.stat().st_size > 0
    assert glob.glob(str(target.parent / "*")) == []
    assert glob.glob(str(target.parent / "*.parquet")) == []

    # rerunning the same job completes and the result reads back
    rerun = _run_writer(target, chunks=3, delay=0.0)
    out, err = rerun.communicate(timeout=1800)  # hang guard only
    assert rerun.returncode == 0, err
    assert out.splitlines()[-1] == "done"
    df = read_parquet(target)
    assert len(df) == 150_000 and list(df.columns) == ["x", "codes"]

    # the stale temp from the killed run is cleaned up, the real output is kept
    assert cleanup_stale_temps(target.parent, max_age_s=3600) == []  # too young
    assert cleanup_stale_temps(target.parent, max_age_s=0) == [tmp]
    assert list(target.parent.iterdir()) == [target]


def test_cleanup_stale_temps(tmp_path):
    old = time.time() - 7200
    stale = temp_path_for(tmp_path / "a.parquet")
    fresh = temp_path_for(tmp_path / "b.json")
    nested = temp_path_for(tmp_path / "sub" / "c.txt")
    nested.parent.mkdir()
    other_hidden = tmp_path / ".keep"  # hidden but not one of ours
    real = tmp_path / "a.parquet"
    lookalike = tmp_path / ".a.parquet.tmp-notapid-zz.parquet"
    for p in (stale, fresh, nested, other_hidden, real, lookalike):
        p.write_text("x")
    for p in (stale, nested, other_hidden, real, lookalike):
        os.utime(p, (old, old))

    assert cleanup_stale_temps(tmp_path, max_age_s=3600) == [stale]
    assert cleanup_stale_temps(tmp_path, max_age_s=3600, recursive=True) == [nested]
    assert cleanup_stale_temps(tmp_path / "does-not-exist") == []
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        [fresh.name, other_hidden.name, real.name, lookalike.name]
    )
    assert cleanup_stale_temps(tmp_path, max_age_s=0) == [fresh]
