"""A table's Markdown (``tables/<name>.md``) as a standalone HTML page for the Snakemake report.

The report (``snakemake --report report.html``) shows images, HTML and PDF inline and offers
other files only as downloads, so each table gets an HTML twin: the same title, table and
footnotes as the Markdown, nothing recomputed. Only the Markdown that
:func:`hrq.tables.render.write_table` and the dataset table write is understood: a ``## title``,
pipe tables (the separator row gives the alignment), ``- `` footnotes and plain paragraphs.

    python -m hrq.tables.html tables/table1.md report/table1.html
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

__all__ = ["markdown_to_html"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafafa; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
ul { padding-left: 1.2em; } li { margin: 0.25em 0; max-width: 70em; }
"""


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    out, cur, i = [], "", 0
    while i < len(inner):  # split on unescaped pipes; "\|" is a literal pipe
        if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] == "|":
            cur += "|"
            i += 2
            continue
        if inner[i] == "|":
            out.append(cur.strip())
            cur = ""
        else:
            cur += inner[i]
        i += 1
    out.append(cur.strip())
    return out


def _is_separator(line: str) -> bool:
    cells = _cells(line)
    return bool(cells) and all(c and set(c) <= set(":-") and "-" in c for c in cells)


def _table(rows: list[str]) -> list[str]:
    header = _cells(rows[0])
    align = []
    body = rows[1:]
    if body and _is_separator(body[0]):
        align = ["r" if c.endswith(":") else "" for c in _cells(body[0])]
        body = body[1:]

    def cls(i: int) -> str:
        return ' class="r"' if i < len(align) and align[i] else ""

    out = ["<table>", "<thead><tr>" + "".join(f"<th{cls(i)}>{html.escape(c)}</th>" for i, c in enumerate(header))
           + "</tr></thead>", "<tbody>"]
    for row in body:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{html.escape(c)}</td>" for i, c in enumerate(_cells(row)))
                   + "</tr>")
    out += ["</tbody>", "</table>"]
    return out


def markdown_to_html(markdown: str, title: str | None = None) -> str:
    """A standalone HTML page of a table's Markdown (see the module docstring)."""
    lines = markdown.splitlines()
    body: list[str] = []
    heading = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
        elif stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            heading = heading or text
            body.append(f"<h2>{html.escape(text)}</h2>")
            i += 1
        elif stripped.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            body += _table(rows)
        elif stripped.startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].strip().startswith(("- ", "* ")):
                items.append(lines[i].strip()[2:])
                i += 1
            body += ["<ul>", *(f"<li>{html.escape(t)}</li>" for t in items), "</ul>"]
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(("#", "|", "- ", "* ")):
                para.append(lines[i].strip())
                i += 1
            body.append(f"<p>{html.escape(' '.join(para))}</p>")
    page_title = html.escape(title or heading or "table")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{page_title}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: python -m hrq.tables.html TABLE.md OUT.html")
    from hrq.io import write_text

    write_text(markdown_to_html(Path(args[0]).read_text(encoding="utf-8")), args[1])


if __name__ == "__main__":
    main()
