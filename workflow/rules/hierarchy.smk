# Hierarchy modelling (Table 1, Figure 1): node embedding + (H)RQ tokenizer per seed, then a
# seq2seq hypernym generator per seed on the fixed multitokens.
HIER_TOKENS = f"{R}/tokens/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}"
HIER_DOWNSTREAM = f"{R}/downstream/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}"


# One tokenizer rule per group of seeds trained as one stack (SEED_GROUPS in common.smk).
for _group in SEED_GROUPS:

    rule:
        name:
            group_rule_name("tokenize_hierarchy", _group)
        input:
            nodes=f"{R}/data/{{dataset}}/nodes.parquet",
            relations=f"{R}/data/{{dataset}}/relations.parquet",
        output:
            **run_outputs(HIER_TOKENS, stack_runs(_group),
                           {"tokens": "tokens.parquet", "metrics": "metrics.parquet", "usage": "usage.png"}),
        wildcard_constraints:
            dataset=_alternatives(HIER["datasets"]),
            method=_alternatives(HIER["methods"]),
        params:
            **stage_params(lambda w, input, output, group=_group: tokenizer_job(
                "table1", w, output, stack_runs(group), HIER["methods"][w.method], HIER["tokenizer"],
                lambda seed, lr: f"seed{seed} tokenizer")),
        threads: CFG["threads"]
        resources:
            gpu=GPU,
        log:
            group_log(f"{R}/logs/tokenize_hierarchy/{{dataset}}/{{method}}/{GRID_DIR}", _group),
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
