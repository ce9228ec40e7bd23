# `snakemake --lint` flags "mixed rules and functions" here: the helpers below serve only this
# file's rules and read best beside them (common.smk holds what several files share).
# Data: generate or parse each dataset into Parquet; embed catalog items.


rule prepare_hierarchy_data:
    output:
        nodes=f"{R}/data/{{dataset}}/nodes.parquet",
        relations=f"{R}/data/{{dataset}}/relations.parquet",
    wildcard_constraints:
        dataset=_alternatives(HIER["datasets"]),
    params:
        **stage_params(lambda w, input, output: {
            "name": w.dataset, "task": "hierarchy", "spec": CFG["datasets"][w.dataset],
            "test_fraction": HIER["test_fraction"], "split_seed": HIER["split_seed"], "split": HIER["split"]}),
    log:
        f"{R}/logs/prepare_hierarchy_data/{{dataset}}.log",
    # A parse error is deterministic: never rerun by the profile's `retries` (downloads retry
    # themselves, hrq.data.download.ensure_file).
    retries: 0
    shell:
        stage_shell("prepare-data")


rule prepare_catalog_data:
    output:
        catalog=f"{R}/data/{{dataset}}/items.parquet",
        sequences=f"{R}/data/{{dataset}}/sequences.parquet",
        stats=f"{R}/data/{{dataset}}/stats.parquet",
    wildcard_constraints:
        dataset=_alternatives(REC["datasets"] + [REC["figure4"]["dataset"]]),
    params:
        **stage_params(lambda w, input, output: {
            "name": w.dataset, "task": "recommendation", "spec": CFG["datasets"][w.dataset],
            "raw_dir": CFG["raw_dir"], "truncation": REC.get("truncation", "before_split")}),
    log:
        f"{R}/logs/prepare_catalog_data/{{dataset}}.log",
    retries: 0  # deterministic, as prepare_hierarchy_data
    shell:
        stage_shell("prepare-data")


def uses_text(dataset):
    """Whether a dataset's items are embedded from text (else from the synthetic taxonomy)."""
    return REC["embedding"]["backend"] == "sentence-transformers"


def item_text(dataset):
    """Where a dataset's item texts come from (an MLflow param of its tokenizer runs)."""
    if not uses_text(dataset):
        return {"backend": "taxonomy vectors"}
    if CFG["datasets"][dataset]["kind"] == "movielens":
        return REC["descriptions"]
    return {"backend": "metadata"}


rule describe_items:
    input:
        catalog=f"{R}/data/{{dataset}}/items.parquet",
    output:
        descriptions=f"{R}/text/{{dataset}}/descriptions.parquet",
    params:
        # LLM answers are cached per dataset across presets and runs: never paid for twice.
        **stage_params(lambda w, input, output: {
            "spec": CFG["datasets"][w.dataset], "descriptions": REC["descriptions"],
            "cache": f"{RESULTS}/cache/descriptions/{w.dataset}.parquet"}),
    log:
        f"{R}/logs/describe_items/{{dataset}}.log",
    shell:
        stage_shell("describe-items")


rule embed_items:
    input:
        unpack(lambda w: {"catalog": f"{R}/data/{w.dataset}/items.parquet",
                          **({"descriptions": f"{R}/text/{w.dataset}/descriptions.parquet"}
                             if uses_text(w.dataset) else {})}),
    output:
        embeddings=f"{R}/embeddings/{{dataset}}.parquet",
    params:
        **stage_params(lambda w, input, output: {
            **REC["embedding"], "spec": CFG["datasets"][w.dataset], "device": CFG["device"]}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/embed_items/{{dataset}}.log",
    shell:
        stage_shell("embed-items")
