# Cells (mean ± std over seeds, paper value, Δ; logged as MLflow parent runs), tables, figures.
# Rebuild one cell:  snakemake results/demo/cells/table1/synthetic_taxonomy/hrq/k3_s16_h8.parquet
# A cell is one (dataset, method, k, s, h) of a task: its seeds' downstream metrics and, under
# `tokenizer/`, the same seeds' tokenizer diagnostics. Table 1 and Table 2 own the cells;
# Table 4 and the diagnostics tables are views of them (no second copy of any number).
# `snakemake --lint`: "mixed rules and functions" (the footnote helpers serve only these rules)
# and two "absolute paths" (the "/".join separators of recommender_note, hgrec_protocol_note)
# are expected here.
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
            "max_length": CFG["datasets"][w.dataset].get("max_length", 20),
            # Table 2's most-popular baseline follows the recommender's protocol
            **({"truncation": REC.get("truncation", "before_split")} if w.table == "table2" else {})}),
    log:
        f"{R}/logs/baseline/{{table}}/{{dataset}}.log",
    shell:
        stage_shell("baseline")


def baseline_files(table):
    return [f"{R}/baselines/{table}/{d}.parquet" for d in CELL_TABLES[table]["datasets"]]


def decoding_note(section, entity):
    """Tables 1-2 footnote: how the 10 answers are decoded (`seq2seq.decoding`)."""
    opts = section["seq2seq"]
    beams = opts["num_beams"]
    if opts.get("decoding", "constrained") == "constrained":
        return (f"Decoding (seq2seq.decoding: constrained): beam search, {beams} beams, constrained by a prefix "
                f"trie to existing {entity}' multitokens (the paper does not say which decoding it used); "
                "invalid@10, logged per seed, is 0 unless fewer valid multitokens than beams survive.")
    return (f"Decoding (seq2seq.decoding: free): plain beam search, {beams} beams; a returned multitoken that is "
            f"no existing {entity[:-1]}'s is a miss and keeps its slot, as TIGER counts invalid IDs (the paper "
            "does not say which decoding it used); invalid@10 is the share of the 10 returned that name nothing.")


def recommender_note():
    """Table 2 footnote: the history limit (`recommendation.truncation`) and the lr schedule."""
    opts = REC["seq2seq"]
    trunc = REC.get("truncation", "before_split")

    def lengths(key, default):
        return "/".join(str(v) for v in sorted({CFG["datasets"][d].get(key, default) for d in REC["datasets"]}))

    limit = f"max_length ({lengths('max_length', 20)})"
    where = (f"each history is cut to its last {limit} items before the leave-one-out split, App. B.2's order"
             if trunc == "before_split" else
             f"the whole history is split; only each model input keeps its last {limit} items")
    if opts.get("schedule", "constant") == "inverse_sqrt":
        lr = (f"lr {opts['lr']:g} for {opts['warmup_steps']} updates, then {opts['lr']:g}·sqrt("
              f"{opts['warmup_steps']}/step) (seq2seq.schedule: inverse_sqrt, TIGER's)")
    else:
        lr = f"constant lr {opts['lr']:g} (seq2seq.schedule: constant)"
    return (f"Protocol: histories of at least min_length ({lengths('min_length', 5)}) items; "
            f"recommendation.truncation: {trunc}: {where}; "
            f"the most-popular baseline uses the same split. Recommender: {lr}, {opts['epochs']} epochs, "
            "tested at its best validation checkpoint.")


def hgrec_protocol_note():
    """HG-Rec views: what HG-Rec's published columns were measured with, beside this run's settings."""
    tok, opts = REC["tokenizer"], REC["seq2seq"]
    return ("paper columns: HG-Rec's protocol (its Table 6 and App. G settings), not ours: sentence-t5-base "
            "item embeddings; tokenizer AdamW lr 0.001, encoder [512, 256, 128, 64], beta 1.0 / 0.5 / 0.25 "
            "(Beauty / Instruments / Yelp), 1,000 epochs (hyperbolic) and 10,000 (vanilla RQ-VAE); recommender "
            "d_model 128, d_ff 1024, 6 heads of 64, 4 layers, dropout 0.1, AdamW lr 0.0001, batch 256, 200 epochs, "
            "early stop 20, beam 20. This run: tokenizer "
            f"lr {'/'.join(format(x, 'g') for x in tok['lr'])}, encoder {tok['hidden_dims']}, beta "
            f"{tok['commitment']:g}, {tok['epochs']:,} epochs; recommender d_model {opts['d_model']}, "
            f"lr {opts['lr']:g} ({opts.get('schedule', 'constant')}), dropout {opts['dropout']:g}, "
            f"{opts['epochs']} epochs, {opts['num_beams']} beams (preset: {PRESET}; hgrec_ablation uses "
            "HG-Rec's settings where this code has the knob).")


def hgrec_epochs_note():
    """training_time footnote: whether the tokenizer epochs cap epochs_to_min_collision below HG-Rec's
    published best epochs (its Table 2)."""
    from hrq.tables.paper import paper_values

    pv = paper_values("hgrec")
    best = pv[(pv["table"] == 2) & (pv["metric"] == "epochs_to_min_collision")]
    epochs = REC["tokenizer"]["epochs"]
    over = best[best["value"] > epochs]
    if over.empty:
        return (f"Epochs: tokenizers train {epochs:,} epochs (recommendation.tokenizer.epochs), at least HG-Rec's "
                f"published best epochs (at most {int(best['value'].max()):,}): not capped below them.")
    listed = ", ".join(f"{r.method} on {r.dataset} {int(r.value):,}" for r in over.itertuples())
    return (f"CAPPED: tokenizers train {epochs:,} epochs here (recommendation.tokenizer.epochs), fewer than "
            f"HG-Rec's published best epochs ({listed}); epochs_to_min_collision cannot exceed {epochs:,} here "
            "(seconds_to_min_collision stops there too): a value near it means the minimum was not reached, "
            "and those cells are not comparable to HG-Rec's (the hgrec_ablation preset trains 10,000).")


TABLES = {
    "table1": dict(
        cells="table1", baselines=baseline_files("table1"),
        metrics=["recall@10", "recall@10_nonfrequent", "recall@10_nonderivable", "tokenizer/oracle_recall@10",
                 "tokenizer/oracle_recall@10_nonfrequent", "tokenizer/oracle_recall@10_nonderivable",
                 *(["invalid@10"] if HIER["seq2seq"].get("decoding") == "free" else [])],
        metric_labels={"tokenizer/oracle_recall@10": "embedding oracle recall@10",
                       "tokenizer/oracle_recall@10_nonfrequent": "embedding oracle recall@10_nonfrequent",
                       "tokenizer/oracle_recall@10_nonderivable": "embedding oracle recall@10_nonderivable"},
        index=["dataset", "k", "s", "h", "metric"], methods=["frequency", "composition", *HIER["methods"]],
        # Dataset-level numbers of the baseline files, one footnote per dataset: (metric, format)
        # pairs, a list because the job's parameters travel as JSON with sorted keys.
        baseline_notes=[["test_pairs", "{:,.0f} test relations"], ["test_share", "{:.1%} of the closure"],
                        ["nonderivable_share", "{:.1%} of them non-derivable from train"],
                        ["nonfrequent_share", "{:.1%} non-frequent"]],
        compare=HIER["compare"],
        title="Table 1: hypernym generation, Recall@10 on held-out relations",
        footnotes=["A test relation (u, v) is a hit when v's whole multitoken (extra token included) is "
                   "among the 10 multitokens beam search returns for u; Recall@10 is the mean over test "
                   "relations.",
                   decoding_note(HIER, "nouns"),
                   "_nonfrequent: only the test relations whose hypernym is not among the 10 most "
                   "frequent train hypernyms (what the frequency baseline cannot score).",
                   "_nonderivable: only the test relations (u, v) whose v is not reachable from u through "
                   "train relations (u→w and w→v in train give u→v, any number of hops): what composing "
                   "train pairs cannot re-derive.",
                   "Baselines: Frequency answers the 10 most frequent train hypernyms for every noun; "
                   "Composition answers the nouns reachable from u through train relations, most frequent "
                   "train hypernym first (ties by id), filled up to 10 with the most frequent train "
                   "hypernyms, unfiltered like the beams (u's train hypernyms may take slots); "
                   "the embedding oracle answers the 10 train hypernyms nearest to the noun in the "
                   "tokenizer's continuous embedding, before quantization (per method and seed).",
                   f"Split (hierarchy.split: {HIER['split']}): " + (
                       f"a seeded random {HIER['test_fraction']:.0%} of the transitive closure, the paper's; "
                       "test pairs derivable from train pairs stay in test." if HIER["split"] == "random" else
                       "test pairs drawn in the random split's seeded order, derivable ones returned to train "
                       f"until none is left, topped up towards {HIER['test_fraction']:.0%} of the closure "
                       "(every test relation is non-derivable).")]),
    "table2": dict(
        cells="table2", baselines=baseline_files("table2"),
        metrics=["ndcg@5", "recall@5", "ndcg@10", "recall@10",
                 *(["invalid@10"] if REC["seq2seq"].get("decoding") == "free" else [])],
        index=["dataset", "k", "s", "h", "metric"], methods=["most_popular", *REC["methods"]], compare=REC["compare"],
        title="Table 2: generative recommendation, leave-one-out test",
        texts=[f"{R}/text/{d}/descriptions.parquet" for d in REC["datasets"] if uses_text(d)],
        footnotes=["A recommendation is a hit only when the whole multitoken, extra token included, "
                   "equals the held-out item's.",
                   decoding_note(REC, "items"),
                   recommender_note(),
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
        title="Tokenizer training cost (HG-Rec Table 2): epochs and seconds to the lowest collision rate "
              "(paper columns: HG-Rec's protocol, its Table 6 settings, not ours)",
        footnotes=["epoch_seconds: mean wall time of an epoch's training pass; epochs_to_min_collision: "
                   "the first epoch reaching the lowest whole-multitoken collision rate (before the extra "
                   "token) seen during training (HG-Rec's \"best epoch\"); seconds_to_min_collision: the "
                   "training passes of those epochs (HG-Rec's \"total\"); train_seconds: the whole "
                   f"tokenizer job ({REC['tokenizer']['epochs']} epochs, per-epoch evaluation included). "
                   f"Runs trained as one stack (seeds_per_job: {CFG['seeds_per_job']}, stack_lrs: "
                   f"{str(REC['tokenizer']['stack_lrs']).lower()}) share each time: every run's is the "
                   "stack's divided by its runs.",
                   "paper: HG-Rec's Table 2 (codebook [256, 256, 256], one RTX 8000 GPU; RQ-VAE = its "
                   "vanilla RQ-VAE, hgrec = its hyperbolic RQ-VAE). Times depend on the device and its "
                   "load: compare methods within one run, and the paper's epochs rather than its seconds "
                   "(its totals also exceed per epoch × best epoch, e.g. 3724 s vs 0.36 s × 9740 = 3506 s, "
                   "so they count more than the training passes).",
                   hgrec_epochs_note(),
                   hgrec_protocol_note()]),
    # HG-Rec's Table 3: downstream quality per codebook strategy (the grid's s: uniform sizes
    # such as 64, or per-level sizes such as 32-64-128), one row per strategy.
    "codebook_strategies": dict(
        cells="table2", baselines=baseline_files("table2"), metrics=["ndcg@10"],
        index=["dataset", "k", "h", "s", "metric"], methods=["most_popular", *REC["methods"]],
        compare=REC["compare"], paper_table=3, paper="hgrec",
        title="Codebook strategies (HG-Rec Table 3): NDCG@10 per codebook size of each level "
              "(paper columns: HG-Rec's protocol, its Table 6 settings, not ours)",
        footnotes=["s: codewords per level; 64 is [64, 64, 64] (HG-Rec's traditional strategy), "
                   "32-64-128 gives the levels 32, 64 and 128 codewords (its differential-length "
                   "strategy, §3.2). Rows follow recommendation.grid.s.",
                   "The same cells as Table 2 (a view): the same seeds, tokenizer lr selection and "
                   "recommender.",
                   "paper: HG-Rec's Table 3 (Beauty, Instruments, Yelp): RQ-VAE rows are its TIGER "
                   "(uniform s) and w/o H (per-level s) variants, hgrec rows its w/o D variants and, at "
                   "64-128-256, HG-Rec itself.",
                   hgrec_protocol_note()]),
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
        percent=False, digits=3, title="Tokenizer diagnostics: recommendation (Table 2's item tokenizers: hierarchy discovery)",
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
            "title": "Table 3: dataset statistics after the protocol (short histories dropped, long ones truncated)"
            if REC.get("truncation", "before_split") == "before_split" else
            "Table 3: dataset statistics after the protocol (short histories dropped; recommendation.truncation: "
            "input_only keeps whole histories, only model inputs are cut)",
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
        baseline=f"{R}/baselines/table1/{{dataset}}.parquet",
    output:
        png=report(f"{R}/figures/fig1_{{dataset}}.png", caption="../report/figure1.rst", category="Table 1",
                   subcategory="Figure 1", labels={"figure": "Figure 1", "dataset": "{dataset}"}),
    wildcard_constraints:
        dataset=_alternatives(HIER["datasets"]),
    params:
        **stage_params(lambda w, input, output: {
            "dataset": w.dataset, "methods": HIER["compare"], "baselines": ["frequency", "composition"],
            **HIER["figure1"]}),
    log:
        f"{R}/logs/figures/fig1_{{dataset}}.log",
    shell:
        stage_shell("figure-recall-vs-h")


rule figure4:
    input:
        embeddings=f"{R}/embeddings/{{dataset}}.parquet",
    output:
        png=report(f"{R}/figures/fig4_{{dataset}}.png", caption="../report/figure4.rst", category="Table 2",
                   subcategory="Figure 4", labels={"figure": "Figure 4", "dataset": "{dataset}"}),
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
