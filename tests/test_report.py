"""The Snakemake report: captions of every report() output, the tables' HTML pages, and figures
that explain themselves."""

import re
from pathlib import Path

import numpy as np
import pandas as pd

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


def test_markdown_table_to_html():
    md = ("## Table 9: demo\n\n| dataset | k | RQ mean ± std |\n|---|---|---:|\n| a\\|b | 3 | 1.0% ± 0.1 |\n"
          "| c | 4 | — |\n\n- mean ± std: over n = 2 seeds <b>\n- second note\n")
    out = markdown_to_html(md)
    assert "<title>Table 9: demo</title>" in out and "<h2>Table 9: demo</h2>" in out
    assert out.count("<tr>") == 3 and "<td>a|b</td>" in out and '<td class="r">1.0% ± 0.1</td>' in out
    assert "<li>mean ± std: over n = 2 seeds &lt;b&gt;</li>" in out and "<li>second note</li>" in out


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
