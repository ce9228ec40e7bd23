"""benchmarks/cost.py end to end at tiny shapes: a row per stage, finite positive numbers."""

import importlib.util
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_T5 = "seq2seq: {d_model: 16, d_ff: 32, num_layers: 1, num_heads: 2, d_kv: 8, batch_size: 8}"


def _cost():
    spec = importlib.util.spec_from_file_location("benchmarks_cost", ROOT / "benchmarks" / "cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cost_table_has_a_row_per_stage(tmp_path, capsys):
    out = tmp_path / "cost.json"
    rows = _cost().main([
        "--quick", "--eager", "--nodes", "300", "--relations", "40", "--steps", "2", "--seq2seq-steps", "1", "--stack", "2",
        "--json", str(out), "--config",
        f"hierarchy={{grid: {{k: [2], s: [8], h: [4]}}, figure1: {{k: 2, s: 8}}, "
        f"tokenizer: {{batch_size: 10, negatives: 5}}, {TINY_T5}}}",
        f"recommendation={{grid: {{k: [2], s: [8], h: [4]}}, tokenizer: {{hidden_dims: [16], batch_size: 16}}, "
        f"{TINY_T5}}}",
    ])
    printed = capsys.readouterr().out
    assert printed.startswith("# loadavg") and "torch threads" in printed
    stages = {(r["table"], r["stage"]) for r in rows}
    assert stages == {("Table 1", "tokenizer"), ("Table 1", "seq2seq"),
                      ("Tables 2-4", "tokenizer"), ("Tables 2-4", "seq2seq")}
    # paper preset: rq and hrq on WordNet; rqvae and hrqvae on each of the four datasets
    assert sum(r["stage"] == "tokenizer" for r in rows) == 2 + 2 * 4
    for r in rows:
        for key in ("s_per_step_single", "hours_single", "jobs", "steps_per_job"):
            assert math.isfinite(r[key]) and r[key] > 0, (r, key)
        for key in ("s_per_step_stacked", "hours_stacked"):  # a number, or why there is none
            assert r[key] in ("n/a", "—") or (math.isfinite(r[key]) and r[key] > 0), (r, key)
        assert f"| {r['table']} | {r['stage']} | {r['dataset']} | {r['method']} |" in printed
    assert printed.count("total**") == 2
    assert json.loads(out.read_text())["rows"] == rows
    assert "Tables 2-4 tokenizer stacked: 6 runs per call (2 seeds x 3 lrs" in printed  # the paper's 3 lrs stacked
