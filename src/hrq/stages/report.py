"""Reporting stages: seeds -> cell (also logged to MLflow as the cell's parent run), cells -> table.

A cell Parquet (schema: :data:`hrq.tables.CELL_COLUMNS` after the key columns) holds one row
per metric with mean ± std over seeds, the per-seed values, the paper's value and Δ.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from hrq.io import read_parquet, write_parquet, write_text
from hrq.tables.aggregate import aggregate_seeds
from hrq.tables.paper import lookup_paper


def aggregate_cell(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Aggregate per-seed metrics files into one cell. ``params``: ``{table, keys, metrics,
    paper, tracking}``; ``metrics`` selects and orders metrics (all when empty); ``paper``
    says whether the table has published values to compare with."""
    frames = [read_parquet(p) for p in inputs["seeds"]]
    seed_metrics = pd.concat(frames, ignore_index=True)
    wanted = params.get("metrics") or list(pd.unique(seed_metrics["metric"]))
    missing = set(wanted) - set(seed_metrics["metric"])
    if missing:
        raise ValueError(f"cell {params['keys']}: metrics {sorted(missing)} not found in {list(inputs['seeds'])}")
    seed_metrics = seed_metrics[seed_metrics["metric"].isin(wanted)]
    seed_metrics = seed_metrics.assign(order=seed_metrics["metric"].map(wanted.index)).sort_values(
        ["order", "seed"], kind="stable")
    keys = dict(params["keys"])
    cell = aggregate_seeds(seed_metrics, {"table": params["table"], **keys} if params.get("paper") else keys)
    if "table" not in cell:
        cell.insert(0, "table", params["table"])
    write_parquet(cell, outputs["cell"])
    spec = params.get("tracking")
    if spec:
        from hrq.tracking import Tracker, default_tracking_uri

        summary = {}
        for row in cell.itertuples():
            summary.update({f"{row.metric}/mean": row.mean, f"{row.metric}/std": row.std,
                            f"{row.metric}/n": row.n, f"{row.metric}/paper": row.paper_value,
                            f"{row.metric}/delta": row.delta})
        tracker = Tracker(default_tracking_uri(spec["results_dir"]), spec["results_dir"])
        tracker.log_cell_metrics(spec["experiment"], spec["cell"], summary, artifacts=[outputs["cell"]])


def render_table(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Cells -> ``<name>.md|csv|parquet``. ``params``: ``{index, methods, compare, percent,
    digits, title, footnotes}``."""
    cells = pd.concat([read_parquet(p) for p in inputs["cells"]], ignore_index=True)
    from hrq.tables.render import render_table as render, write_table

    baseline, treatment = params.get("compare") or (None, None)
    rendered = render(cells, index=params["index"], methods=params["methods"], baseline=baseline,
                      treatment=treatment, percent=params.get("percent", True),
                      digits=params.get("digits", 2), title=params.get("title", ""),
                      footnotes=params.get("footnotes", ()))
    md = Path(outputs["md"])
    write_table(rendered, md.parent, md.stem)


def dataset_table(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Table 3: measured users / items / interactions per dataset, beside the paper's counts."""
    stats = pd.concat([read_parquet(p) for p in inputs["stats"]], ignore_index=True)
    rows = []
    for r in stats.itertuples():
        paper = {m: lookup_paper(3, r.dataset, "", m) for m in ("users", "items")}
        rows.append({"dataset": r.dataset, "users": int(r.users), "items": int(r.items),
                     "interactions": int(r.interactions),
                     "paper_users": paper["users"][0] if paper["users"] else math.nan,
                     "paper_items": paper["items"][0] if paper["items"] else math.nan})
    frame = pd.DataFrame(rows)

    def fmt(x):
        return "—" if pd.isna(x) else f"{int(x):,}"

    lines = [f"## {params.get('title', 'Table 3')}", "",
             "| dataset | users | items | interactions | paper users | paper items |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.dataset} | {fmt(r.users)} | {fmt(r.items)} | {fmt(r.interactions)} | "
              f"{fmt(r.paper_users)} | {fmt(r.paper_items)} |" for r in frame.itertuples()]
    lines += ["", *[f"- {f}" for f in params.get("footnotes", ())]]
    write_text("\n".join(lines) + "\n", outputs["md"])
    write_text(frame.to_csv(index=False), outputs["csv"])
    write_parquet(frame, outputs["parquet"])
