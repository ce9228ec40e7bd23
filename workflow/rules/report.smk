# The Snakemake report: `snakemake --report report.html` after `snakemake all_tables`.
# Each table's Markdown gets an HTML twin under <results>/<preset>/report/ (the report shows HTML
# and images inline, other files only as downloads); tables and figures are marked with report()
# and grouped by the paper table they belong to, each with its caption from workflow/report/.
# Figures are marked in tables.smk (rules figure1, figure4).

# table -> (report category, subcategory): grouped by the paper table whose cells they show.
REPORT_GROUPS = {
    "table1": ("Table 1", "Recall@10"),
    "tokenizers_hierarchy": ("Table 1", "Tokenizer diagnostics"),
    "table2": ("Table 2", "NDCG and Recall"),
    "tokenizers_recommendation": ("Table 2", "Tokenizer diagnostics"),
    "training_time": ("Table 2", "HG-Rec views"),
    "codebook_strategies": ("Table 2", "HG-Rec views"),
    "table3": ("Table 3", "Dataset statistics"),
    "table4": ("Table 4", "Latent norms"),
}


for _name, (_category, _subcategory) in REPORT_GROUPS.items():

    rule:
        name:
            f"report_{_name}"
        localrule: True
        input:
            md=f"{R}/tables/{_name}.md",
        output:
            html=report(f"{R}/report/{_name}.html", caption=f"../report/{_name}.rst", category=_category,
                        subcategory=_subcategory, labels={"table": _name, "preset": PRESET}),
        log:
            f"{R}/logs/report/{_name}.log",
        shell:
            f"{PY} -m hrq.tables.html {{input.md:q}} {{output.html:q}} > {{log:q}} 2>&1"
