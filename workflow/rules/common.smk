# Shared helpers: the resolved config, result paths, and the JSON job spec each rule passes to
# `python -m hrq.stages <stage> --job '<json>'`. The spec is a rule param, so changing a config
# value that a job depends on reruns exactly the jobs that read it.
import json
import re
import sys

from snakemake.exceptions import WorkflowError

from hrq.config import ConfigError, resolve_config, uses_gpu
from hrq.grid import codebook_label, grid_s

try:
    # --configfile/--config values win over the preset (e.g. `--config device=cuda`).
    CFG = resolve_config(config, workflow.config_settings.overwrite_config)
except ConfigError as err:
    raise WorkflowError(str(err))

PRESET = CFG["preset"]
RESULTS = CFG["results_dir"]
R = f"{RESULTS}/{PRESET}"
PY = sys.executable  # the interpreter running Snakemake (the project's .venv)
HIER = CFG["hierarchy"]
REC = CFG["recommendation"]
SEEDS = CFG["seeds"]
GRID_DIR = "k{k}_s{s}_h{h}"
# Training rules declare `gpu=GPU` so that `--resources gpu=N` runs at most N of them at once on
# a GPU machine. A job that trains on the CPU (device: cpu, or auto without a visible GPU)
# holds no GPU, so CPU runs use every core instead of queueing behind a GPU token.
GPU = 1 if uses_gpu(CFG) else 0


def _alternatives(names):
    """A wildcard regex matching exactly these names (never matching when empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    k=r"\d+",
    s=r"\d+(?:-\d+)*",  # a codebook strategy label: 64, or 32-64-128 (hrq.grid.codebook_label)
    h=r"\d+",
    seed=r"\d+",
    lr=r"[0-9][0-9.e+-]*",
    table=r"table1|table2",


def job_spec(input, output, params):
    """JSON for `python -m hrq.stages`: named inputs (lists kept), named outputs, params."""
    ins = {k: (list(v) if not isinstance(v, str) else v) for k, v in input.items()}
    outs = {k: str(v) for k, v in output.items()}
    return json.dumps({"inputs": ins, "outputs": outs, "params": params}, sort_keys=True)


class _PathPlaceholder:
    """Stands in for a job's `input`/`output` when only its settings are wanted."""

    def __getattr__(self, name):
        return f"<{name}>"


def stage_params(make):
    """A rule's params from `make(wildcards, input, output) -> dict`:

    * `job`: the JSON `python -m hrq.stages` reads (inputs, outputs and those params);
    * `settings`: the same params with placeholders for paths, a function of the wildcards
      alone. Snakemake records only such params (not ones derived from input/output), so this
      is what makes a changed config value rerun exactly the jobs that read it.
    """
    return {"job": lambda w, input, output: job_spec(input, output, make(w, input, output)),
            "settings": lambda w: json.dumps(make(w, _PathPlaceholder(), _PathPlaceholder()), sort_keys=True)}


def grid_cells(section):
    """Every (method, k, s, h) of a task section, in config order; ``s`` is the codebook
    strategy's label (``64``, or ``32-64-128`` for per-level sizes)."""
    return [(m, k, codebook_label(s), h) for m in section["methods"] for k in section["grid"]["k"]
            for s in section["grid"]["s"] for h in section["grid"]["h"]]


def cell_of(w):
    return {"dataset": w.dataset, "method": w.method, "k": int(w.k), "s": grid_s(w.s), "h": int(w.h)}


def tracking(table, w, job_key=None, run_name=None):
    spec = {"results_dir": RESULTS, "experiment": f"{PRESET}/{table}", "cell": cell_of(w)}
    if job_key is not None:
        spec.update(job_key=job_key, run_name=run_name)
    return spec


def init_tracking_store():
    from hrq.tracking import default_tracking_uri, init_store

    init_store(default_tracking_uri(RESULTS), RESULTS)


def stage_shell(stage):
    return (f"OMP_NUM_THREADS={{threads}} MKL_NUM_THREADS={{threads}} {PY} -m hrq.stages {stage} "
            "--job {params.job:q} > {log:q} 2>&1")
