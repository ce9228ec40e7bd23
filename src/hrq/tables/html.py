"""A table's Markdown (``tables/<name>.md``) as a standalone HTML page for the Snakemake report.

The report (``snakemake --report report.html``) shows images, HTML and PDF inline and offers
other files only as downloads, so each table gets an HTML twin: the same title, table and
footnotes as the Markdown, nothing recomputed. The Markdown is rendered by markdown-it-py
(CommonMark plus GFM pipe tables; raw HTML in the Markdown is escaped, not passed through); the
page's title is the first heading's text.

    python -m hrq.tables.html tables/table1.md report/table1.html
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["markdown_to_html"]

# markdown-it writes a GFM column's alignment as style="text-align:right" on its th/td.
_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
th[style*="text-align:right"], td[style*="text-align:right"] { text-align: right; font-variant-numeric: tabular-nums; }
ul { padding-left: 1.2em; } li { margin: 0.25em 0; max-width: 70em; }
"""

_MD = MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_html(markdown: str, title: str | None = None) -> str:
    """A standalone HTML page of a table's Markdown (see the module docstring); ``title``
    overrides the page title taken from the first heading."""
    tokens = _MD.parse(markdown)
    heading = None
    for i, tok in enumerate(tokens[:-1]):
        if tok.type == "heading_open":
            inline = tokens[i + 1]
            heading = "".join(c.content for c in inline.children or () if c.type in ("text", "code_inline"))
            break
    body = _MD.renderer.render(tokens, _MD.options, {})
    page_title = html.escape(title or heading or "table")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{page_title}</title><style>{_STYLE}</style></head>\n<body>\n"
            + body + "</body></html>\n")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m hrq.tables.html TABLE.md OUT.html")
    from hrq.io import write_text

    write_text(markdown_to_html(Path(args[0]).read_text(encoding="utf-8")), args[1])


if __name__ == "__main__":
    main()
