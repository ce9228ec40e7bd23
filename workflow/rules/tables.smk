# Cells (mean ± std over seeds, paper value, Δ; logged as MLflow parent runs), tables, figures.
# Rebuild one cell:  snakemake results/demo/cells/table1/synthetic_taxonomy/hrq/k3_s16_h8.parquet
METHOD_LABELS = {"rq": "RQ", "hrq": "HRQ", "rqvae": "RQ-VAE", "hrqvae": "HRQ-VAE", "random": "Random"}
TABLE_METRICS = {
    "table1": ["recall@10"],
    "table2": ["ndcg@5", "recall@5", "ndcg@10", "recall@10"],
    "table4": ["norm_mean", "norm_std", "norm_cv"],
    "tokenizers_hierarchy": [],  # all diagnostics the tokenizer wrote
    "tokenizers_recommendation": [],
}
# Which per-seed file a table's cells aggregate: downstream results or tokenizer diagnostics.
TABLE_SOURCE = {"table1": "downstream", "table2": "downstream", "table4": "tokens",
                "tokenizers_hierarchy": "tokens", "tokenizers_recommendation": "tokens"}
PAPER_TABLES = {"table1", "table2", "table4"}
VAE_METHODS = [m for m, spec in REC["methods"].items() if spec["kind"] == "vae"]


def table_cells(table):
    """(dataset, method, k, s, h) of every cell of a table, from the config."""
    if table in ("table1", "tokenizers_hierarchy"):
        datasets, cells = HIER["datasets"], grid_cells(HIER)
    else:
        datasets, cells = REC["datasets"], grid_cells(REC)
        if table == "table4":
            cells = [c for c in cells if c[0] in VAE_METHODS]
    return [(d, *c) for d in datasets for c in cells]


def cell_path(table, dataset, method, k, s, h):
    return f"{R}/cells/{table}/{dataset}/{method}/k{k}_s{s}_h{h}.parquet"


def seed_files(w):
    kind = TABLE_SOURCE[w.table]
    return [f"{R}/{kind}/{w.dataset}/{w.method}/k{w.k}_s{w.s}_h{w.h}/seed{seed}/metrics.parquet"
            for seed in SEEDS]


rule aggregate_cell:
    input:
        seeds=seed_files,
    output:
        cell=f"{R}/cells/{{table}}/{{dataset}}/{{method}}/{GRID_DIR}.parquet",
    params:
        job=lambda w, input, output: job_spec(input, output, {
            "table": w.table, "keys": cell_of(w), "metrics": TABLE_METRICS[w.table],
            "paper": w.table in PAPER_TABLES,
            "tracking": {"results_dir": RESULTS, "experiment": f"{PRESET}/{w.table}", "cell": cell_of(w)}}),
    log:
        f"{R}/logs/aggregate_cell/{{table}}/{{dataset}}/{{method}}/{GRID_DIR}.log",
    shell:
        stage_shell("aggregate-cell")


TABLES = {
    "table1": dict(
        index=["dataset", "k", "s", "h", "metric"], methods=list(HIER["methods"]), compare=HIER["compare"],
        title="Table 1: hypernym generation, Recall@10 on held-out relations",
        footnotes=["A test relation (u, v) is a hit when v's whole multitoken (extra token included) is "
                   "among the 10 multitokens beam search (10 beams, constrained to existing nouns) "
                   "returns for u; Recall@10 is the mean over test relations."]),
    "table2": dict(
        index=["dataset", "k", "s", "h", "metric"], methods=list(REC["methods"]), compare=REC["compare"],
        title="Table 2: generative recommendation, leave-one-out test",
        footnotes=["A recommendation is a hit only when the whole multitoken, extra token included, "
                   "equals the held-out item's.",
                   f"Item embeddings: {REC['embedding']['backend']} backend."]),
    "table4": dict(
        index=["dataset", "k", "s", "h", "metric"], methods=VAE_METHODS, compare=REC["compare"],
        percent=False, digits=4,
        title="Table 4: norms of the quantized latents (RQ-VAE: ||x_s||, HRQ-VAE: ||log0(x_s)||)",
        footnotes=["norm_cv = std / mean of the norms over all items (the paper's coefficient of variation)."]),
    "tokenizers_hierarchy": dict(
        index=["dataset", "k", "s", "h", "metric"], methods=list(HIER["methods"]), compare=HIER["compare"],
        percent=False, digits=3, title="Tokenizer diagnostics: hierarchy modelling",
        footnotes=["collision_rate is before the extra token; first_token_purity is against the "
                   "ground-truth top-level subtree (synthetic data only); mean_rank/map rank true "
                   "hypernyms by the continuous embedding (Nickel & Kiela, train relations)."]),
    "tokenizers_recommendation": dict(
        index=["dataset", "k", "s", "h", "metric"], methods=list(REC["methods"]), compare=REC["compare"],
        percent=False, digits=3, title="Tokenizer diagnostics: hierarchy discovery",
        footnotes=["collision_rate is before the extra token; first_token_purity is against the "
                   "ground-truth top-level subtree (synthetic data only)."]),
}


def table_inputs(table):
    return [cell_path(table, *c) for c in table_cells(table)]


for _name, _spec in TABLES.items():

    rule:
        name:
            _name
        input:
            cells=table_inputs(_name),
        output:
            md=f"{R}/tables/{_name}.md",
            csv=f"{R}/tables/{_name}.csv",
            parquet=f"{R}/tables/{_name}.parquet",
        params:
            job=lambda w, input, output, spec=_spec: job_spec(input, output, spec),
        log:
            f"{R}/logs/tables/{_name}.log",
        shell:
            stage_shell("render-table")


rule table3:
    input:
        stats=[f"{R}/data/{d}/stats.parquet" for d in REC["datasets"]],
    output:
        md=f"{R}/tables/table3.md",
        csv=f"{R}/tables/table3.csv",
        parquet=f"{R}/tables/table3.parquet",
    params:
        job=lambda w, input, output: job_spec(input, output, {
            "title": "Table 3: dataset statistics after the protocol (≥5 interactions, last 20)",
            "footnotes": ["The paper's Table 3 swaps the Toys and Sports rows; ML-10M's 71,567 users "
                          "include tag-only users."]}),
    log:
        f"{R}/logs/tables/table3.log",
    shell:
        stage_shell("dataset-table")


rule figure1:
    input:
        cells=lambda w: [cell_path("table1", w.dataset, m, HIER["figure1"]["k"], HIER["figure1"]["s"], h)
                         for m in HIER["compare"] for h in HIER["grid"]["h"]],
    output:
        png=f"{R}/figures/fig1_{{dataset}}.png",
    wildcard_constraints:
        dataset=_alternatives(HIER["datasets"]),
    params:
        job=lambda w, input, output: job_spec(input, output, {
            "dataset": w.dataset, "methods": HIER["compare"], **HIER["figure1"]}),
    log:
        f"{R}/logs/figures/fig1_{{dataset}}.log",
    shell:
        stage_shell("figure-recall-vs-h")


rule figure4:
    input:
        embeddings=f"{R}/embeddings/{{dataset}}.parquet",
    output:
        png=f"{R}/figures/fig4_{{dataset}}.png",
    wildcard_constraints:
        dataset=_alternatives([REC["figure4"]["dataset"]]),
    params:
        job=lambda w, input, output: job_spec(input, output, {
            "methods": VAE_METHODS, "method_specs": REC["methods"], "tokenizer": REC["tokenizer"],
            "figure4": REC["figure4"], "seed": SEEDS[0], "device": CFG["device"],
            "labels": METHOD_LABELS,
            "tracking": {"results_dir": RESULTS, "experiment": f"{PRESET}/figure4",
                         "cell": {"dataset": w.dataset, "k": REC["figure4"]["k"], "s": REC["figure4"]["s"], "h": 2},
                         "job_key": output.png, "run_name": "figure4"}}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/figures/fig4_{{dataset}}.log",
    shell:
        stage_shell("figure-token-space")


def all_table_outputs():
    out = []
    names = [*TABLES] + (["table3"] if REC["datasets"] else [])
    for name in names:
        if name.startswith("tokenizers_hierarchy") or name == "table1":
            if not HIER["datasets"]:
                continue
        elif not REC["datasets"]:
            continue
        out += [f"{R}/tables/{name}.{ext}" for ext in ("md", "csv", "parquet")]
    out += [f"{R}/figures/fig1_{d}.png" for d in HIER["datasets"]]
    out.append(f"{R}/figures/fig4_{REC['figure4']['dataset']}.png")
    return out
