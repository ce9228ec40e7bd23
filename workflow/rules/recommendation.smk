# Hierarchy discovery (Tables 2-4, Figure 4): (H)RQ-VAE tokenizer (or the Random baseline) per
# seed on item embeddings, then a TIGER-style generative recommender per seed.
REC_TOKENS = f"{R}/tokens/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}"
REC_DOWNSTREAM = f"{R}/downstream/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}"


rule tokenize_items:
    input:
        embeddings=f"{R}/embeddings/{{dataset}}.parquet",
        catalog=f"{R}/data/{{dataset}}/items.parquet",
    output:
        tokens=f"{REC_TOKENS}/tokens.parquet",
        metrics=f"{REC_TOKENS}/metrics.parquet",
    wildcard_constraints:
        dataset=_alternatives(REC["datasets"]),
        method=_alternatives(REC["methods"]),
    params:
        job=lambda w, input, output: job_spec(input, output, {
            "method": w.method, "method_spec": REC["methods"][w.method], "k": int(w.k), "s": int(w.s),
            "h": int(w.h), "seed": int(w.seed), "tokenizer": REC["tokenizer"], "device": CFG["device"],
            "tracking": tracking("table2", w, output.tokens, f"seed{w.seed} tokenizer")}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/tokenize_items/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}.log",
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
        job=lambda w, input, output: job_spec(input, output, {
            "seed": int(w.seed), "seq2seq": REC["seq2seq"], "device": CFG["device"],
            "min_length": CFG["datasets"][w.dataset].get("min_length", 5),
            "max_length": CFG["datasets"][w.dataset].get("max_length", 20),
            "tracking": tracking("table2", w, output.metrics, f"seed{w.seed} recommender")}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/recommendation/{{dataset}}/{{method}}/{GRID_DIR}/seed{{seed}}.log",
    shell:
        stage_shell("recommendation")
