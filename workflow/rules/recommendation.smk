# `snakemake --lint` flags "mixed rules and functions" here: the helpers below serve only this
# file's rules and read best beside them (common.smk holds what several files share).
# Hierarchy discovery (Tables 2-4, Figure 4): (H)RQ-VAE tokenizer (or the Random baseline) per
# seed on item embeddings, then a TIGER-style generative recommender per seed.
# One tokenizer per learning rate of `recommendation.tokenizer.lr` (App. C.2); the cell keeps the
# lr whose recommender is best on validation (rules/tables.smk).
REC_TOKENS = f"{R}/tokens/{{dataset}}/{{method}}/{GRID_DIR}/lr{{lr}}/seed{{seed}}"
REC_DOWNSTREAM = f"{R}/downstream/{{dataset}}/{{method}}/{GRID_DIR}/lr{{lr}}/seed{{seed}}"


def lr_label(lr):
    return format(float(lr), "g")


def method_lrs(method):
    """The tokenizer learning rates a method is trained with (Random trains nothing: one)."""
    lrs = REC["tokenizer"]["lr"]
    return lrs[:1] if REC["methods"][method]["kind"] == "random" else lrs


# One tokenizer rule per group of seeds trained as one stack (SEED_GROUPS in common.smk); each
# learning rate is its own job.
for _group in SEED_GROUPS:

    rule:
        name:
            group_rule_name("tokenize_items", _group)
        input:
            embeddings=f"{R}/embeddings/{{dataset}}.parquet",
            catalog=f"{R}/data/{{dataset}}/items.parquet",
        output:
            **seed_outputs(REC_TOKENS, _group,
                           {"tokens": "tokens.parquet", "metrics": "metrics.parquet", "usage": "usage.png"}),
        wildcard_constraints:
            dataset=_alternatives(REC["datasets"]),
            method=_alternatives(REC["methods"]),
        params:
            **stage_params(lambda w, input, output, group=_group: tokenizer_job(
                "table2", w, output, group, REC["methods"][w.method], {**REC["tokenizer"], "lr": float(w.lr)},
                lambda seed: f"seed{seed} lr{w.lr} tokenizer", logged={"item_text": item_text(w.dataset)})),
        threads: CFG["threads"]
        resources:
            gpu=GPU,
        log:
            group_log(f"{R}/logs/tokenize_items/{{dataset}}/{{method}}/{GRID_DIR}/lr{{lr}}", _group),
        shell:
            stage_shell("tokenize-items")


rule recommendation:
    input:
        tokens=f"{REC_TOKENS}/tokens.parquet",
        sequences=f"{R}/data/{{dataset}}/sequences.parquet",
    output:
        metrics=f"{REC_DOWNSTREAM}/metrics.parquet",
    wildcard_constraints:
        dataset=_alternatives(REC["datasets"]),
        method=_alternatives(REC["methods"]),
    params:
        **stage_params(lambda w, input, output: {
            "seed": int(w.seed), "seq2seq": REC["seq2seq"], "device": CFG["device"],
            "selection": REC["selection"], "truncation": REC.get("truncation", "before_split"),
            "min_length": CFG["datasets"][w.dataset].get("min_length", 5),
            "max_length": CFG["datasets"][w.dataset].get("max_length", 20),
            "tracking": tracking("table2", w, output.metrics, f"seed{w.seed} lr{w.lr} recommender")}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/recommendation/{{dataset}}/{{method}}/{GRID_DIR}/lr{{lr}}/seed{{seed}}.log",
    shell:
        stage_shell("recommendation")
