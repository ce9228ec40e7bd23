# Cells (mean ± std over seeds, paper value, Δ; logged as MLflow parent runs), tables, figures.
# Rebuild one cell:  snakemake results/demo/cells/table1/synthetic_taxonomy/hrq/k3_s16_h8.parquet
# A cell is one (dataset, method, k, s, h) of a task: its seeds' downstream metrics and, under
# `tokenizer/`, the same seeds' tokenizer diagnostics. Table 1 and Table 2 own the cells;
# Table 4 and the diagnostics tables are views of them (no second copy of any number).
CELL_TABLES = {"table1": HIER, "table2": REC}
VAE_METHODS = [m for m, spec in REC["methods"].items() if spec["kind"] == "vae"]


def table_cells(table, methods=None):
    """(dataset, method, k, s, h) of every cell of a task table, from the config."""
    section = CELL_TABLES[table]
    cells = [c for c in grid_cells(section) if methods is None or c[0] in methods]
    return [(d, *c) for d in section["datasets"] for c in cells]


def cell_path(table, dataset, method, k, s, h):
    return f"{R}/cells/{table}/{dataset}/{method}/k{k}_s{s}_h{h}.parquet"


def seed_files(kind):
    """A cell's per-seed metrics files: one per seed (Table 1), one per (tokenizer lr, seed)
    (Table 2, in the order of :func:`seed_lrs`)."""

    def files(w):
        cell = f"{R}/{kind}/{w.dataset}/{w.method}/k{w.k}_s{w.s}_h{w.h}"
        if w.table == "table1":
            return [f"{cell}/seed{seed}/metrics.parquet" for seed in SEEDS]
        return [f"{cell}/lr{lr_label(lr)}/seed{seed}/metrics.parquet" for lr in method_lrs(w.method) for seed in SEEDS]

    return files


def seed_lrs(w):
    return [] if w.table == "table1" else [lr_label(lr) for lr in method_lrs(w.method) for _ in SEEDS]


rule aggregate_cell:
    input:
        seeds=seed_files("downstream"),
        tokenizer_seeds=seed_files("tokens"),
    output:
        cell=f"{R}/cells/{{table}}/{{dataset}}/{{method}}/{GRID_DIR}.parquet",
    wildcard_constraints:
        table="table1|table2",
    params:
        **stage_params(lambda w, input, output: {
            "table": w.table, "keys": cell_of(w), "tracking": tracking(w.table, w),
            "lrs": seed_lrs(w), "selection": REC["selection"]}),
    log:
        f"{R}/logs/aggregate_cell/{{table}}/{{dataset}}/{{method}}/{GRID_DIR}.log",
    shell:
        stage_shell("aggregate-cell")


rule baseline:
    input:
        unpack(lambda w: {"relations": f"{R}/data/{w.dataset}/relations.parquet"} if w.table == "table1"
               else {"sequences": f"{R}/data/{w.dataset}/sequences.parquet"}),
    output:
        baseline=f"{R}/baselines/{{table}}/{{dataset}}.parquet",
    wildcard_constraints:
        table="table1|table2",
    params:
        **stage_params(lambda w, input, output: {
            "table": w.table, "min_length": CFG["datasets"][w.dataset].get("min_length", 5),
            "max_length": CFG["datasets"][w.dataset].get("max_length", 20)}),
    log:
        f"{R}/logs/baseline/{{table}}/{{dataset}}.log",
    shell:
        stage_shell("baseline")


def baseline_files(table):
    return [f"{R}/baselines/{table}/{d}.parquet" for d in CELL_TABLES[table]["datasets"]]


TABLES = {
    "table1": dict(
        cells="table1", baselines=baseline_files("table1"),
        metrics=["recall@10", "recall@10_nonfrequent", "tokenizer/oracle_recall@10",
                 "tokenizer/oracle_recall@10_nonfrequent"],
        metric_labels={"tokenizer/oracle_recall@10": "embedding oracle recall@10",
                       "tokenizer/oracle_recall@10_nonfrequent": "embedding oracle recall@10_nonfrequent"},
        index=["dataset", "k", "s", "h", "metric"], methods=["frequency", *HIER["methods"]],
        compare=HIER["compare"],
        title="Table 1: hypernym generation, Recall@10 on held-out relations",
        footnotes=["A test relation (u, v) is a hit when v's whole multitoken (extra token included) is "
                   "among the 10 multitokens beam search (10 beams, constrained to existing nouns) "
                   "returns for u; Recall@10 is the mean over test relations.",
                   "_nonfrequent: only the test relations whose hypernym is not among the 10 most "
                   "frequent train hypernyms (what the frequency baseline cannot score).",
                   "Baselines: Frequency answers the 10 most frequent train hypernyms for every noun; "
                   "the embedding oracle answers the 10 train hypernyms nearest to the noun in the "
                   "tokenizer's continuous embedding, before quantization (per method and seed)."]),
    "table2": dict(
        cells="table2", baselines=baseline_files("table2"), metrics=["ndcg@5", "recall@5", "ndcg@10", "recall@10"],
        index=["dataset", "k", "s", "h", "metric"], methods=["most_popular", *REC["methods"]], compare=REC["compare"],
        title="Table 2: generative recommendation, leave-one-out test",
        texts=[f"{R}/text/{d}/descriptions.parquet" for d in REC["datasets"] if uses_text(d)],
        footnotes=["A recommendation is a hit only when the whole multitoken, extra token included, "
                   "equals the held-out item's.",
                   "Baselines: Most popular recommends the items with most train interactions to every "
                   "user; Random is the paper's random-multitoken tokenizer under the same recommender.",
                   f"Item embeddings: {REC['embedding']['backend']}"
                   + (f" ({REC['embedding']['model']})." if uses_text(None) else "."),
                   f"Tokenizer lr per cell: the best of {REC['tokenizer']['lr']} by mean {REC['selection']} "
                   "over seeds (cells' selection/ rows); each recommender is tested at its best "
                   f"{REC['selection']} checkpoint."]),
    "table4": dict(
        cells="table2", prefix="tokenizer/", metrics=["norm_mean", "norm_std", "norm_cv"], paper_table=4,
        index=["dataset", "k", "s", "h", "metric"], methods=VAE_METHODS, compare=REC["compare"],
        percent=False, digits=4,
        title="Table 4: norms of the quantized latents (RQ-VAE: ||x_s||, HRQ-VAE: ||log0(x_s)||)",
        footnotes=["norm_cv = std / mean of the norms over all items (the paper's coefficient of variation)."]),
    # HG-Rec's Table 2: what reaching the lowest collision rate costs each VAE tokenizer.
    "training_time": dict(
        cells="table2", prefix="tokenizer/",
        metrics=["epoch_seconds", "epochs_to_min_collision", "seconds_to_min_collision", "min_collision_rate",
                 "train_seconds"],
        index=["dataset", "k", "s", "h", "metric"], methods=VAE_METHODS, compare=REC["compare"],
        percent=False, digits=3, paper_table=2, paper="hgrec",
        title="Tokenizer training cost (HG-Rec Table 2): epochs and seconds to the lowest collision rate",
        footnotes=["epoch_seconds: mean wall time of an epoch's training pass; epochs_to_min_collision: "
                   "the first epoch reaching the lowest whole-multitoken collision rate (before the extra "
                   "token) seen during training (HG-Rec's \"best epoch\"); seconds_to_min_collision: the "
                   "training passes of those epochs (HG-Rec's \"total\"); train_seconds: the whole "
                   f"tokenizer job ({REC['tokenizer']['epochs']} epochs, per-epoch evaluation included).",
                   "paper: HG-Rec's Table 2 (codebook [256, 256, 256], one RTX 8000 GPU; RQ-VAE = its "
                   "vanilla RQ-VAE, hgrec = its hyperbolic RQ-VAE). Times depend on the device and its "
                   "load: compare methods within one run, and the paper's epochs rather than its seconds "
                   "(its totals also exceed per epoch × best epoch, e.g. 3724 s vs 0.36 s × 9740 = 3506 s, "
                   "so they count more than the training passes)."]),
    # HG-Rec's Table 3: downstream quality per codebook strategy (the grid's s: uniform sizes
    # such as 64, or per-level sizes such as 32-64-128), one row per strategy.
    "codebook_strategies": dict(
        cells="table2", baselines=baseline_files("table2"), metrics=["ndcg@10"],
        index=["dataset", "k", "h", "s", "metric"], methods=["most_popular", *REC["methods"]],
        compare=REC["compare"], paper_table=3, paper="hgrec",
        title="Codebook strategies (HG-Rec Table 3): NDCG@10 per codebook size of each level",
        footnotes=["s: codewords per level; 64 is [64, 64, 64] (HG-Rec's traditional strategy), "
                   "32-64-128 gives the levels 32, 64 and 128 codewords (its differential-length "
                   "strategy, §3.2). Rows follow recommendation.grid.s.",
                   "The same cells as Table 2 (a view): the same seeds, tokenizer lr selection and "
                   "recommender.",
                   "paper: HG-Rec's Table 3 (Beauty, Instruments, Yelp): RQ-VAE rows are its TIGER "
                   "(uniform s) and w/o H (per-level s) variants, hgrec rows its w/o D variants and, at "
                   "64-128-256, HG-Rec itself."]),
    "tokenizers_hierarchy": dict(
        cells="table1", prefix="tokenizer/", metrics=[],
        index=["dataset", "k", "s", "h", "metric"], methods=list(HIER["methods"]), compare=HIER["compare"],
        percent=False, digits=3, title="Tokenizer diagnostics: hierarchy modelling",
        footnotes=["collision_rate is before the extra token; first_token_purity is against the "
                   "ground-truth top-level subtree (synthetic data only); mean_rank/map rank true "
                   "hypernyms by the continuous embedding (Nickel & Kiela, train relations)."]),
    "tokenizers_recommendation": dict(
        cells="table2", prefix="tokenizer/", metrics=[],
        index=["dataset", "k", "s", "h", "metric"], methods=list(REC["methods"]), compare=REC["compare"],
        percent=False, digits=3, title="Tokenizer diagnostics: hierarchy discovery",
        footnotes=["collision_rate is before the extra token; first_token_purity is against the "
                   "ground-truth top-level subtree (synthetic data only)."]),
}


def table_inputs(spec):
    return [cell_path(spec["cells"], *c) for c in table_cells(spec["cells"], spec["methods"])]


for _name, _spec in TABLES.items():

    rule:
        name:
            _name
        input:
            cells=table_inputs(_spec),
            texts=_spec.get("texts", []),
            baselines=_spec.get("baselines", []),
        output:
            md=f"{R}/tables/{_name}.md",
            csv=f"{R}/tables/{_name}.csv",
            parquet=f"{R}/tables/{_name}.parquet",
        params:
            **stage_params(lambda w, input, output, spec=_spec: {k: v for k, v in spec.items() if k not in ("texts", "baselines")}),
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
        **stage_params(lambda w, input, output: {
            "title": "Table 3: dataset statistics after the protocol (short histories dropped, long ones truncated)",
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
        **stage_params(lambda w, input, output: {
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
        **stage_params(lambda w, input, output: {
            "methods": REC["compare"], "method_specs": REC["methods"],
            "tokenizer": {**REC["tokenizer"], "lr": REC["tokenizer"]["lr"][0]},
            "figure4": REC["figure4"], "seed": SEEDS[0], "device": CFG["device"],
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
    # The codebook-strategy view only when the grid has several (else it repeats Table 2's NDCG@10).
    names = [n for n, spec in TABLES.items() if CELL_TABLES[spec["cells"]]["datasets"] and spec["methods"]
             and (n != "codebook_strategies" or len(REC["grid"]["s"]) > 1)]
    names += ["table3"] if REC["datasets"] else []
    for name in names:
        out += [f"{R}/tables/{name}.{ext}" for ext in ("md", "csv", "parquet")]
    out += [f"{R}/figures/fig1_{d}.png" for d in HIER["datasets"]]
    out.append(f"{R}/figures/fig4_{REC['figure4']['dataset']}.png")
    return out
