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
include: "workflow/rules/report.smk"


# `snakemake --report report.html` (after all_tables): this text, then the tables and figures
# grouped by paper table, each with its caption from workflow/report/.
report: "workflow/report/workflow.rst"


# `snakemake --lint` still asks for a conda environment or container on every rule: the
# workflow runs in the project's own virtualenv (scripts/setup.sh: pinned constraints.txt, hrq
# installed editable), whose interpreter each rule calls (PY in common.smk); a second software
# stack per rule would duplicate it and could drift from it.


onstart:
    init_tracking_store()
    # One line per running training job every 20 s (HRQ_PROGRESS_SECONDS; 0: off): epoch/total
    # and ETA from the <log>.progress files the stages write (hrq.progress). A daemon thread:
    # it never holds up Snakemake's exit.
    from snakemake.logging import logger as _logger
    from hrq.progress import start_monitor

    start_monitor(f"{R}/logs", _logger.info)


onsuccess:
    from hrq.progress import stop_monitor

    stop_monitor()


onerror:
    from hrq.progress import stop_monitor

    stop_monitor()


rule all_tables:
    default_target: True
    input:
        all_table_outputs(),
        # the tables' HTML pages of the report (report.smk), one per table built
        [f"{R}/report/{os.path.basename(p).removesuffix('.md')}.html" for p in all_table_outputs() if p.endswith(".md")],
