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


# Methods whose tokenizer lrs train as one stack (`recommendation.tokenizer.stack_lrs`): every lr
# of a seed group in one job, the runs of one shape differing only in lr. The others (Random,
# or every method without stack_lrs) have a job per lr.
LR_STACKED = [m for m in REC["methods"] if REC["tokenizer"]["stack_lrs"] and len(method_lrs(m)) > 1]
TOKENIZE_ITEMS_FILES = {"tokens": "tokens.parquet", "metrics": "metrics.parquet", "usage": "usage.png"}


def tokenize_items_params(w, output, runs):
    lrs_stacked = any(lr is not None for _, lr in runs)
    options = {key: value for key, value in REC["tokenizer"].items() if key != "stack_lrs"}  # the workflow's, not training's
    options["lr"] = REC["tokenizer"]["lr"] if lrs_stacked else float(w.lr)
    return tokenizer_job("table2", w, output, runs, REC["methods"][w.method], options,
                         lambda seed, lr: f"seed{seed} lr{lr} tokenizer", logged={"item_text": item_text(w.dataset)})


# Tokenizer rules per group of seeds trained as one stack (SEED_GROUPS in common.smk):
# `tokenize_items`, a job per lr (its {lr} wildcard), and for LR_STACKED methods
# `tokenize_items_lrs`, one job for all lrs.
TOKENIZE_ITEMS_RULES = [
    ("tokenize_items", [m for m in REC["methods"] if m not in LR_STACKED], (None,), "lr{lr}"),
    ("tokenize_items_lrs", LR_STACKED, tuple(lr_label(lr) for lr in REC["tokenizer"]["lr"]), "lrs"),
]
for _group in SEED_GROUPS:
    for _name, _methods, _lrs, _log_dir in TOKENIZE_ITEMS_RULES:
        if not _methods:
            continue

        rule:
            name:
                group_rule_name(_name, _group)
            input:
                embeddings=f"{R}/embeddings/{{dataset}}.parquet",
                catalog=f"{R}/data/{{dataset}}/items.parquet",
            output:
                **run_outputs(REC_TOKENS, stack_runs(_group, _lrs), TOKENIZE_ITEMS_FILES),
            wildcard_constraints:
                dataset=_alternatives(REC["datasets"]),
                method=_alternatives(_methods),
            params:
                **stage_params(lambda w, input, output, runs=stack_runs(_group, _lrs): tokenize_items_params(
                    w, output, runs)),
            threads: CFG["threads"]
            resources:
                gpu=GPU,
            log:
                group_log(f"{R}/logs/tokenize_items/{{dataset}}/{{method}}/{GRID_DIR}/{_log_dir}", _group),
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
