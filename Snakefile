# hrq: regenerate the HRQ paper's tables cell by cell.
#   snakemake all_tables                      # demo preset, default profile (workflow/profiles/default)
#   snakemake all_tables --cores all --resources gpu=1 --config preset=paper
# Target first: with Snakemake 9, `--resources gpu=1 all_tables` would read the target as a resource.
import os

from snakemake.utils import min_version

min_version("9.0")


# Relative to this file, so `--directory elsewhere` keeps the repo's config (and puts results/ there).
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/hierarchy.smk"
include: "workflow/rules/recommendation.smk"
include: "workflow/rules/tables.smk"


onstart:
    init_tracking_store()


rule all_tables:
    default_target: True
    input:
        all_table_outputs(),
