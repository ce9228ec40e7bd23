"""Reporting stages: seeds -> cell (also logged to MLflow as the cell's parent run), cells -> table.

A cell Parquet (schema: :data:`hrq.tables.CELL_COLUMNS` after the key columns) holds one row
per metric with mean ± std over seeds, the per-seed values, the paper's value and Δ.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from hrq.io import read_parquet, write_parquet, write_text
from hrq.tables.aggregate import aggregate_seeds, read_cells
from hrq.tables.paper import lookup_paper


TOKENIZER_PREFIX = "tokenizer/"


def select_lr(downstream: pd.DataFrame, selection: str) -> tuple[str, dict[str, float]]:
    """The tokenizer lr (``lr`` column) whose seeds have the best mean ``selection`` metric
    (a ``valid/`` metric: higher is better), and that mean for every lr. Ties keep the first."""
    rows = downstream[downstream["metric"] == selection]
    if rows.empty:
        raise ValueError(f"no {selection!r} in the cell's seeds (have {sorted(set(downstream['metric']))})")
    means = rows.groupby("lr", sort=False)["value"].mean()
    return str(means.idxmax()), {str(k): float(v) for k, v in means.items()}


def aggregate_cell(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Aggregate one cell's seeds: downstream metrics (``inputs['seeds']``) and, prefixed with
    ``tokenizer/``, the tokenizer diagnostics of the same seeds (``inputs['tokenizer_seeds']``).
    ``params``: ``{table, keys, tracking, lrs?, selection?}``; the paper's values are looked up
    for ``table``.

    With ``lrs`` (one tokenizer lr label per input file, Table 2), the cell keeps the seeds of
    the lr with the best mean ``selection`` metric (App. C.2: the lr is chosen on the downstream
    validation split) and adds ``selection/lr`` and ``selection/<metric>/lr=<lr>`` rows."""
    lrs = params.get("lrs") or []
    # Each seed file is read once, tagged with its tokenizer lr when there are several.
    labels = lrs or [None] * len(inputs["seeds"])
    downstream = pd.concat([read_parquet(p).assign(lr=lr) for p, lr in zip(inputs["seeds"], labels)],
                           ignore_index=True)
    tokenizer = pd.concat([read_parquet(p).assign(lr=lr) for p, lr in zip(inputs.get("tokenizer_seeds", []), labels)]
                          or [downstream.iloc[:0]], ignore_index=True)
    if lrs:
        best, means = select_lr(downstream, params["selection"])
        chosen = downstream[downstream["lr"] == best]
        selection_rows = [chosen[["seed"]].drop_duplicates().assign(metric="selection/lr", value=float(best))]
        for lr in means:
            per_seed = downstream[(downstream["lr"] == lr) & (downstream["metric"] == params["selection"])]
            selection_rows.append(per_seed[["seed", "value"]].assign(metric=f"selection/{params['selection']}/lr={lr}"))
        downstream = pd.concat([chosen, *selection_rows], ignore_index=True)
        tokenizer = tokenizer[tokenizer["lr"] == best]
    downstream, tokenizer = downstream.drop(columns="lr"), tokenizer.drop(columns="lr")
    tokenizer = tokenizer.assign(metric=TOKENIZER_PREFIX + tokenizer["metric"].astype(str))
    seed_metrics = pd.concat([downstream, tokenizer], ignore_index=True)
    cell = aggregate_seeds(seed_metrics, {"table": params["table"], **params["keys"]})
    write_parquet(cell, outputs["cell"])
    spec = params.get("tracking")
    if spec:
        from hrq.stages.common import tracker_for

        summary = {}
        for row in cell.itertuples():
            summary.update({f"{row.metric}/mean": row.mean, f"{row.metric}/std": row.std,
                            f"{row.metric}/n": row.n, f"{row.metric}/paper": row.paper_value,
                            f"{row.metric}/delta": row.delta})
        from hrq.runrecords import run_record_path

        tracker_for(spec["results_dir"]).log_cell_metrics(spec["experiment"], spec["cell"], summary, artifacts=[outputs["cell"]],
                                                          record=run_record_path(outputs["cell"]))


def select_metrics(cells: pd.DataFrame, metrics: list[str], prefix: str = "",
                   paper_table: int | None = None, paper: str = "hrq") -> pd.DataFrame:
    """The rows of ``cells`` a table shows: metrics under ``prefix`` (the prefix stripped), all of
    them when ``metrics`` is empty, else those in ``metrics`` in that order (names may carry a
    ``tokenizer/`` part, e.g. Table 1's embedding oracle). With ``paper_table`` the published
    value and Δ are looked up again in that table of ``paper`` (a key of
    :data:`hrq.tables.paper.PAPERS`): Table 4 is a view of Table 2's cells, so its paper
    columns come from the HRQ paper's Table 4; the HG-Rec views take HG-Rec's Tables 2 and 3."""
    if metrics:
        rows = cells[cells["metric"].isin([prefix + m for m in metrics])]
    else:
        rows = cells[cells["metric"].str.startswith(prefix)] if prefix else cells[~cells["metric"].str.contains("/")]
    rows = rows.assign(metric=rows["metric"].str.slice(len(prefix)))
    if metrics:
        missing = set(metrics) - set(rows["metric"])
        if missing:
            raise ValueError(f"cells lack metrics {sorted(missing)} (have {sorted(set(cells['metric']))})")
        rows = rows.assign(_order=rows["metric"].map(metrics.index)).sort_values("_order", kind="stable")
        rows = rows.drop(columns="_order")
    if paper_table is not None:
        found = [lookup_paper(paper_table, r.dataset, r.method, r.metric, r.k, r.s, r.h, paper=paper)
                 for r in rows.itertuples()]
        rows = rows.assign(table=f"table{paper_table}",
                           paper_value=[f[0] if f else math.nan for f in found],
                           paper_std=[f[1] if f else math.nan for f in found])
        rows = rows.assign(delta=rows["mean"] - rows["paper_value"])
    return rows.reset_index(drop=True)


def baseline_rows(cells: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Cell-shaped rows of a dataset's baselines (:func:`hrq.stages.downstream.baseline`) for
    every (k, s, h) of that dataset in ``cells`` and every metric of ``cells`` they have: the
    baseline does not depend on the grid, so each table row shows it beside the models."""
    keys = cells[["table", "dataset", "k", "s", "h"]].drop_duplicates()
    metrics = set(cells["metric"])
    rows = []
    for key in keys.itertuples(index=False):
        mine = baselines[(baselines["dataset"] == key.dataset) & baselines["metric"].isin(metrics)]
        for b in mine.itertuples(index=False):
            rows.append({**key._asdict(), "method": b.method, "metric": b.metric, "mean": b.value,
                         "std": math.nan, "n": 1, "values": [b.value], "seeds": [b.seed],
                         "paper_value": math.nan, "paper_std": math.nan, "delta": math.nan})
    return pd.DataFrame(rows, columns=cells.columns) if rows else cells.iloc[:0]


def baseline_notes(baselines: pd.DataFrame, notes: Sequence[Sequence[str]]) -> list[str]:
    """One footnote per dataset of ``baselines`` (with a ``dataset`` column) with its
    dataset-level numbers: ``notes`` lists (metric of the baseline files, e.g.
    ``nonderivable_share``; format string for its value) in the order to show them; absent
    metrics are left out."""
    lines = []
    for dataset, rows in baselines.groupby("dataset", sort=False):
        values = rows.drop_duplicates("metric").set_index("metric")["value"]
        parts = [text.format(values[m]) for m, text in notes if m in values.index]
        if parts:
            lines.append(f"{dataset}: {', '.join(parts)}.")
    return lines


def render_table(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Cells (and the datasets' baselines, ``inputs['baselines']``) -> ``<name>.md|csv|parquet``.
    ``params``: ``{metrics, metric_labels, prefix, paper_table, paper, index, methods, compare,
    percent, digits, title, footnotes, baseline_notes}`` (see :func:`select_metrics` and
    :func:`baseline_notes`)."""
    from hrq.tables.render import render_table as render, write_table

    cells = read_cells(inputs["cells"])
    cells = select_metrics(cells, params.get("metrics", []), params.get("prefix", ""), params.get("paper_table"),
                           params.get("paper", "hrq"))
    if inputs.get("baselines"):
        baselines = pd.concat([read_parquet(p).assign(dataset=Path(p).stem) for p in inputs["baselines"]],
                              ignore_index=True)
        # Baseline rows come first only as data: order every row by its grid point (dataset,
        # k, s, h in the order the cells came, i.e. the config's), then by metric.
        def grid_points(frame):
            return list(frame[["dataset", "k", "s", "h"]].itertuples(index=False, name=None))

        position = {point: i for i, point in enumerate(dict.fromkeys(grid_points(cells)))}
        order = {m: i for i, m in enumerate(params.get("metrics") or [])}
        cells = pd.concat([baseline_rows(cells, baselines), cells], ignore_index=True)
        cells = (cells.assign(_point=[position[p] for p in grid_points(cells)],
                              _metric=cells["metric"].map(lambda m: order.get(m, len(order))))
                 .sort_values(["_point", "_metric"], kind="stable")
                 .drop(columns=["_point", "_metric"]))
    cells = cells.assign(metric=cells["metric"].map(lambda m: params.get("metric_labels", {}).get(m, m)))
    baseline, treatment = params.get("compare") or (None, None)
    footnotes = list(params.get("footnotes", ()))
    if inputs.get("baselines") and params.get("baseline_notes"):
        footnotes += baseline_notes(baselines, params["baseline_notes"])
    if inputs.get("texts"):
        from hrq.stages.text import text_summary

        footnotes += [f"Item texts of {Path(p).parent.name}: {text_summary(p)}." for p in inputs["texts"]]
    rendered = render(cells, index=params["index"], methods=params["methods"], baseline=baseline,
                      treatment=treatment, percent=params.get("percent", True),
                      digits=params.get("digits", 2), title=params.get("title", ""),
                      footnotes=footnotes)
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
