"""The Snakemake report: captions of every report() output, the tables' HTML pages, and figures
that explain themselves."""

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrq.tables.figures import FIGURE4_CAPTION, TokenSpacePanel, _recall_vs_h_figure, _token_space_figure
from hrq.tables.html import markdown_to_html

ROOT = Path(__file__).resolve().parents[1]


def test_every_report_caption_exists():
    captions = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        captions |= set(re.findall(r'caption=f?"\.\./report/([^"]+)"', smk.read_text()))
    assert captions, "no report() caption found"
    names = {c.replace("{_name}", n) for c in captions
             for n in re.findall(r'^    "(\w+)": \(', (ROOT / "workflow/rules/report.smk").read_text(), re.M)}
    names |= {c for c in captions if "{" not in c}
    for name in names:
        assert (ROOT / "workflow" / "report" / name).is_file(), name
    assert (ROOT / "workflow" / "report" / "workflow.rst").is_file()
    assert 'report: "workflow/report/workflow.rst"' in (ROOT / "Snakefile").read_text()


def test_captions_are_valid_rst():
    from docutils.core import publish_parts

    for rst in (ROOT / "workflow" / "report").glob("*.rst"):
        text = re.sub(r"\{\{.*?\}\}", "x", rst.read_text())
        publish_parts(text, writer="html", settings_overrides={"halt_level": 2})


class _Page(HTMLParser):
    """The parts of a rendered page the tests look at: title, headings, table rows (per cell: tag,
    style attribute, text), list items, and every start tag seen."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.title, self.h2, self.rows, self.items, self.tags = "", [], [], [], []
        self._cell = self._text = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = [tag, dict(attrs).get("style") or "", ""]
        elif tag in ("title", "h2", "li"):
            self._text = ""

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self.rows[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "title":
            self.title, self._text = self._text, None
        elif tag in ("h2", "li"):
            (self.h2 if tag == "h2" else self.items).append(self._text)
            self._text = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data
        if self._text is not None:
            self._text += data


_DEMO_MD = ("## Table 9: demo\n\n| dataset | k | RQ mean ± std |\n|---|---|---:|\n| a\\|b | 3 | 1.0% ± 0.1 |\n"
            "| c | 4 | — |\n\n- mean ± std: over n = 2 seeds <b>\n- second note\n")


def test_markdown_table_to_html():
    out = markdown_to_html(_DEMO_MD)
    page = _Page(out)
    assert page.title == "Table 9: demo" and page.h2 == ["Table 9: demo"]
    # header + 2 body rows, 3 cells each: the escaped pipe in "a\|b" stays inside its cell
    assert [[(tag, text) for tag, _, text in row] for row in page.rows] == [
        [("th", "dataset"), ("th", "k"), ("th", "RQ mean ± std")],
        [("td", "a|b"), ("td", "3"), ("td", "1.0% ± 0.1")],
        [("td", "c"), ("td", "4"), ("td", "—")],
    ]
    assert page.items == ["mean ± std: over n = 2 seeds <b>", "second note"]
    assert "<li>mean ± std: over n = 2 seeds &lt;b&gt;</li>" in out


def test_markdown_table_right_aligned_columns_are_styled_right_and_tabular():
    out = markdown_to_html(_DEMO_MD)
    # the page's CSS selects right-aligned cells by a substring of their style attribute ...
    rule = re.search(r'td\[style\*="([^"]+)"\][^{]*\{([^}]*)\}', out)
    assert rule, "no CSS rule for right-aligned cells"
    needle, decls = rule.groups()
    assert "text-align: right" in decls and "tabular-nums" in decls
    assert re.search(rf'th\[style\*="{re.escape(needle)}"\]', out), "header cells of numeric columns not styled"
    # ... and exactly the cells of the "---:" column carry that substring
    aligned = [[needle in style for _, style, _ in row] for row in _Page(out).rows]
    assert aligned == [[False, False, True]] * 3


def test_markdown_html_is_escaped_not_passed_through():
    md = ("## <i>T</i>\n\n<script>alert(1)</script>\n\n| a | b |\n|---|---:|\n| <img src=x onerror=alert(1)> | 1 |\n\n"
          "- note <a href=\"javascript:alert(1)\">x</a>\n\ntext <b>bold</b>\n")
    out = markdown_to_html(md)
    page = _Page(out)
    assert not {"script", "img", "a", "b", "i"} & set(page.tags), page.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert page.title == "<i>T</i>" and page.rows[1][0][2] == "<img src=x onerror=alert(1)>"
    assert page.items == ['note <a href="javascript:alert(1)">x</a>']
    assert "<title>a &lt;b&gt;</title>" in markdown_to_html(md, title="a <b>")


def test_markdown_to_html_cli_writes_the_page(tmp_path):
    from hrq.tables.html import main

    src, dst = tmp_path / "t.md", tmp_path / "out" / "t.html"
    dst.parent.mkdir()
    src.write_text(_DEMO_MD, encoding="utf-8")
    main([str(src), str(dst)])
    assert dst.read_text(encoding="utf-8") == markdown_to_html(_DEMO_MD)
    with pytest.raises(SystemExit):
        main([str(src)])


def test_figure4_legend_says_what_hue_and_shade_mean():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 2)) * 0.3
    panels = [TokenSpacePanel("RQ-VAE", pts, rng.integers(0, 3, 50), rng.integers(0, 3, 50)),
              TokenSpacePanel("HRQ-VAE", pts, rng.integers(0, 3, 50), rng.integers(0, 3, 50), curvature=1.0)]
    fig = _token_space_figure(panels)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["hue = first token", "shade = second token (dark → light)"]
    texts = [t.get_text() for t in fig.texts]
    assert any(FIGURE4_CAPTION in t and "Poincaré" in t for t in texts)


def _cells(dataset="synthetic_taxonomy"):
    return pd.DataFrame({"dataset": dataset, "method": ["rq", "hrq"] * 2, "k": 3, "s": "16", "h": [4, 4, 8, 8],
                         "metric": "recall@10", "mean": [.2, .3, .25, .35], "std": .01, "n": 2})


def test_figure1_names_dataset_baselines_and_missing_paper_values():
    fig = _recall_vs_h_figure(_cells(), k=3, s=16, metric="recall@10", methods=["rq", "hrq"],
                              dataset="synthetic_taxonomy", baselines={"Frequency": 0.1, "Composition": 0.2})
    ax = fig.axes[0]
    assert ax.get_title().startswith("synthetic_taxonomy: k=3")
    assert "no published paper values" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("Frequency") for lab in labels) and any(lab.startswith("Composition") for lab in labels)


def test_figure1_with_paper_values_has_no_absence_note():
    cells = _cells("wordnet").assign(paper_value=[.5, .6, .55, .65])
    fig = _recall_vs_h_figure(cells, k=3, s=16, metric="recall@10", methods=["rq", "hrq"], dataset="wordnet")
    assert fig.axes[0].get_title() == "wordnet: k=3, |C|=16"
