# Hierarchy modelling (Table 1, Figure 1): node embedding + (H)RQ tokenizer per seed, then a
# seq2seq hypernym generator per seed on the fixed multitokens.
HIER_TOKENS = f"{R}/tokens/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}"
HIER_DOWNSTREAM = f"{R}/downstream/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}"


rule tokenize_hierarchy:
    input:
        nodes=f"{R}/data/{{dataset}}/nodes.parquet",
        relations=f"{R}/data/{{dataset}}/relations.parquet",
    output:
        tokens=f"{HIER_TOKENS}/tokens.parquet",
        metrics=f"{HIER_TOKENS}/metrics.parquet",
        usage=f"{HIER_TOKENS}/usage.png",
    wildcard_constraints:
        dataset=_alternatives(HIER["datasets"]),
        method=_alternatives(HIER["methods"]),
    params:
        **stage_params(lambda w, input, output: {
            "method": w.method, "method_spec": HIER["methods"][w.method], "k": int(w.k), "s": grid_s(w.s),
            "h": int(w.h), "seed": int(w.seed), "tokenizer": HIER["tokenizer"], "device": CFG["device"],
            "tracking": tracking("table1", w, output.tokens, f"seed{w.seed} tokenizer")}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/tokenize_hierarchy/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}.log",
    shell:
        stage_shell("tokenize-hierarchy")


rule hypernym_generation:
    input:
        tokens=f"{HIER_TOKENS}/tokens.parquet",
        relations=f"{R}/data/{{dataset}}/relations.parquet",
    output:
        metrics=f"{HIER_DOWNSTREAM}/metrics.parquet",
    wildcard_constraints:
        dataset=_alternatives(HIER["datasets"]),
        method=_alternatives(HIER["methods"]),
    params:
        **stage_params(lambda w, input, output: {
            "seed": int(w.seed), "seq2seq": HIER["seq2seq"], "device": CFG["device"],
            "tracking": tracking("table1", w, output.metrics, f"seed{w.seed} seq2seq")}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/hypernym_generation/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}.log",
    shell:
        stage_shell("hypernym-generation")
