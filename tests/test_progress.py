"""Per-job progress lines (hrq.progress): the writer beside a job's log and the console line."""

import json
import threading

from hrq.progress import (ProgressWriter, format_duration, format_line, job_label, progress_path,
                          read_progress, running_lines, start_monitor, stop_monitor)


def test_progress_path_is_beside_the_log(tmp_path):
    assert progress_path(tmp_path / "seed0.log") == tmp_path / "seed0.log.progress"


def test_writer_records_epoch_total_and_eta(tmp_path):
    clock = iter([100.0, 110.0, 130.0])
    w = ProgressWriter(tmp_path / "j.log.progress", total=10, clock=lambda: next(clock))
    w.update(0)  # first epoch done after 10 s: 9 left at 10 s each
    rec = read_progress(tmp_path / "j.log.progress")
    assert (rec["epoch"], rec["total"], rec["elapsed"], rec["eta"]) == (1, 10, 10.0, 90.0)
    w.update(2)  # three epochs in 30 s
    rec = json.loads((tmp_path / "j.log.progress").read_text())
    assert (rec["epoch"], rec["eta"]) == (3, 70.0)
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no temp left


def test_writer_never_raises(tmp_path):
    ProgressWriter(tmp_path / "gone" / "j.log.progress", total=3).update(0)


def test_format_line_and_durations():
    rec = {"epoch": 12, "total": 40, "elapsed": 21.0, "eta": 49.4, "updated": 1000.0}
    assert format_line("tokenize_hierarchy a/b/seed0", rec) == (
        "[progress] tokenize_hierarchy a/b/seed0: epoch 12/40, 0:21 elapsed, ETA 0:49")
    assert format_line("x", {**rec, "what": "hrqvae"}, now=1002.0).startswith("[progress] x hrqvae: epoch 12/40, 0:23")
    assert format_line("x", {"epoch": 3, "total": None, "elapsed": 5}) == "[progress] x: epoch 3, 0:05 elapsed"
    assert format_duration(3725) == "1:02:05" and format_duration(None) == "?"


def test_running_lines_label_and_staleness(tmp_path):
    logs = tmp_path / "logs"
    live = logs / "tokenize_hierarchy" / "synthetic_taxonomy" / "hrq" / "k3_s16_h8" / "seed0.log.progress"
    old = logs / "recommendation" / "d" / "seed1.log.progress"
    for f, updated in ((live, 1000.0), (old, 1.0)):
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"epoch": 2, "total": 4, "elapsed": 2.0, "eta": 2.0, "updated": updated}))
    (logs / "broken.log.progress").write_text("{")  # half-written: skipped
    assert job_label(live, logs) == "tokenize_hierarchy synthetic_taxonomy/hrq/k3_s16_h8/seed0"
    lines = running_lines(logs, now=1001.0, stale_seconds=60)
    assert lines == ["[progress] tokenize_hierarchy synthetic_taxonomy/hrq/k3_s16_h8/seed0: epoch 2/4, "
                     "0:03 elapsed, ETA 0:02"]
    assert running_lines(tmp_path / "missing") == []


def test_monitor_emits_and_stops(tmp_path):
    f = tmp_path / "rule" / "job.log.progress"
    f.parent.mkdir()
    ProgressWriter(f, total=5).update(1)
    seen, got = [], threading.Event()

    def emit(line):
        seen.append(line)
        got.set()

    thread = start_monitor(tmp_path, emit, interval=0.05)
    try:
        assert thread is not None and thread.daemon
        assert got.wait(5)
    finally:
        stop_monitor()
    thread.join(5)
    assert not thread.is_alive()
    assert seen[0].startswith("[progress] rule job: epoch 2/5")


def test_monitor_off_with_zero_interval(tmp_path):
    assert start_monitor(tmp_path, print, interval=0) is None
