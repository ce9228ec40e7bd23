"""Run one pipeline stage: ``python -m hrq.stages <stage> --job '<json>'``.

The job JSON is ``{"inputs": {name: path | [paths]}, "outputs": {name: path}, "params": {...}}``;
Snakemake rules build it (workflow/rules/common.smk). Every stage is also a plain function in
:mod:`hrq.stages` taking the same three mappings, so a notebook can call it directly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import warnings

STAGES = {
    "prepare-data": "hrq.stages.data:prepare_data",
    "describe-items": "hrq.stages.text:describe_items",
    "embed-items": "hrq.stages.text:embed_items",
    "tokenize-hierarchy": "hrq.stages.tokenize:tokenize_hierarchy",
    "tokenize-items": "hrq.stages.tokenize:tokenize_items",
    "hypernym-generation": "hrq.stages.downstream:hypernym_generation",
    "recommendation": "hrq.stages.downstream:recommendation",
    "baseline": "hrq.stages.downstream:baseline",
    "aggregate-cell": "hrq.stages.report:aggregate_cell",
    "render-table": "hrq.stages.report:render_table",
    "dataset-table": "hrq.stages.report:dataset_table",
    "figure-recall-vs-h": "hrq.stages.figures:figure_recall_vs_h",
    "figure-token-space": "hrq.stages.figures:figure_token_space",
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m hrq.stages", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--job", required=True, help="JSON with inputs, outputs and params")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # geoopt 0.5.1 still uses torch.jit.script (deprecated in torch 2.13): harmless noise in logs.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*TorchScript.*", category=DeprecationWarning)
    job = json.loads(args.job)
    from hrq.attemptlog import attempt_log
    from hrq.jobguard import main_guarded

    # The log of an attempt that fails or is killed is kept for after Snakemake's retry
    # (hrq.attemptlog); a newer job for the same outputs (the rerun after Snakemake itself was
    # killed) makes this one exit instead of racing it (hrq.jobguard).
    with attempt_log(args.stage):
        def run() -> None:
            module, func = STAGES[args.stage].split(":")
            fn = getattr(importlib.import_module(module), func)
            start = time.perf_counter()
            fn(job.get("inputs", {}), job["outputs"], job.get("params", {}))
            print(f"[hrq] {args.stage} done in {time.perf_counter() - start:.1f}s", file=sys.stderr)

        try:
            main_guarded(args.stage, job["outputs"], run)
        finally:  # the console's per-job progress line (hrq.progress) ends with the job
            from hrq.progress import clear_job_progress

            clear_job_progress()


if __name__ == "__main__":
    main()
