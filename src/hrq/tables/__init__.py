"""Paper values, seed aggregation, significance, rendering and figures for the result tables.

* :mod:`hrq.tables.paper`: the published numbers of Tables 1-4 (``paper_values.csv``).
* :mod:`hrq.tables.aggregate`: per-seed metrics -> cells (mean ± std, paper Δ); Welch tests.
* :mod:`hrq.tables.render`: cells -> Markdown/CSV/Parquet tables.
* :mod:`hrq.tables.figures`: Figure 1 (metric vs h) and Figure 4 (token space).
"""

import importlib

# Lazy: a stage that only aggregates cells should not pay for matplotlib's import.
_EXPORTS = {
    "CELL_COLUMNS": "aggregate", "KEY_COLUMNS": "aggregate", "aggregate_seeds": "aggregate",
    "compare": "aggregate", "welch": "aggregate",
    "TokenSpacePanel": "figures", "plot_recall_vs_h": "figures", "plot_token_space": "figures",
    "token_colors": "figures",
    "lookup_paper": "paper", "normalize_table": "paper", "paper_values": "paper",
    "FRAME_COLUMNS": "render", "METHOD_LABELS": "render", "RenderedTable": "render",
    "render_table": "render", "write_table": "render",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hrq.tables' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hrq.tables.{_EXPORTS[name]}"), name)


__all__ = [
    "CELL_COLUMNS",
    "FRAME_COLUMNS",
    "KEY_COLUMNS",
    "METHOD_LABELS",
    "RenderedTable",
    "TokenSpacePanel",
    "aggregate_seeds",
    "compare",
    "lookup_paper",
    "normalize_table",
    "paper_values",
    "plot_recall_vs_h",
    "plot_token_space",
    "render_table",
    "token_colors",
    "welch",
    "write_table",
]
