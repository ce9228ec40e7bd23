# Data: generate or parse each dataset into Parquet; embed catalog items.


rule prepare_hierarchy_data:
    output:
        nodes=f"{R}/data/{{dataset}}/nodes.parquet",
        relations=f"{R}/data/{{dataset}}/relations.parquet",
    wildcard_constraints:
        dataset=_alternatives(HIER["datasets"]),
    params:
        job=lambda w, input, output: job_spec(input, output, {
            "name": w.dataset, "task": "hierarchy", "spec": CFG["datasets"][w.dataset],
            "test_fraction": HIER["test_fraction"], "split_seed": HIER["split_seed"]}),
    log:
        f"{R}/logs/prepare_hierarchy_data/{{dataset}}.log",
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
        job=lambda w, input, output: job_spec(input, output, {
            "name": w.dataset, "task": "recommendation", "spec": CFG["datasets"][w.dataset]}),
    log:
        f"{R}/logs/prepare_catalog_data/{{dataset}}.log",
    shell:
        stage_shell("prepare-data")


rule embed_items:
    input:
        catalog=f"{R}/data/{{dataset}}/items.parquet",
    output:
        embeddings=f"{R}/embeddings/{{dataset}}.parquet",
    params:
        job=lambda w, input, output: job_spec(input, output, {
            **REC["embedding"], "spec": CFG["datasets"][w.dataset], "device": CFG["device"]}),
    threads: CFG["threads"]
    resources:
        gpu=GPU,
    log:
        f"{R}/logs/embed_items/{{dataset}}.log",
    shell:
        stage_shell("embed-items")
