# Shared helpers: the resolved config, result paths, and the JSON job spec each rule passes to
# `python -m hrq.stages <stage> --job '<json>'`. The spec is a rule param, so changing a config
# value that a job depends on reruns exactly the jobs that read it.
import json
import re
import sys

from snakemake.exceptions import WorkflowError

from hrq.config import ConfigError, command_line_texts, resolve_config, uses_gpu
from hrq.grid import codebook_label, grid_s
from hrq.stages.jobs import TokenizerJob, TokenizerRun, seed_groups, seeds_label

try:
    # --configfile/--config values win over the preset (e.g. `--config device=cuda`); the
    # --config ones get their types back (`seeds=[0,1]` arrives as ['0', '1']).
    CFG = resolve_config(config, workflow.config_settings.overwrite_config, workflow.config_settings.config,
                         command_line_texts(sys.argv))
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
# Tokenizer jobs train `seeds_per_job` seeds each, as one stack in one process (issue 16). With
# 1, a rule with a {seed} wildcard (one job per seed); otherwise one rule per group of seeds,
# named after the rule alone when one group holds every seed (the default), else
# `<rule>_seeds0-3`-style. Per-seed paths stay the same either way.
SEED_GROUPS = [None] if CFG["seeds_per_job"] == 1 else seed_groups(SEEDS, CFG["seeds_per_job"])


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

    def items(self):  # no named paths to iterate (tokenizer_job)
        return []


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


TASK_SECTIONS = {"table1": ("hierarchy", HIER), "table2": ("recommendation", REC)}


def check_in_grid(table, w):
    """Refuse a target (a cell, a seed's tokens or metrics) outside the configured task: a path
    such as .../k3_s16_h99.parquet would otherwise be planned and trained without a word."""
    name, section = TASK_SECTIONS[table]
    grid = section["grid"]
    wanted = {"dataset": (w.dataset, section["datasets"]), "method": (w.method, list(section["methods"])),
              "k": (int(w.k), grid["k"]), "s": (w.s, [codebook_label(s) for s in grid["s"]]),
              "h": (int(w.h), grid["h"])}
    outside = [f"{key} {value} is not in {name}.{'grid.' if key in grid else ''}{key} {allowed}"
               for key, (value, allowed) in wanted.items() if value not in allowed]
    if outside:
        raise WorkflowError(f"{w.dataset}/{w.method}/k{w.k}_s{w.s}_h{w.h} is outside the configured {name} task "
                            f"(preset {PRESET}): " + "; ".join(outside) + ". Add it to the config (e.g. "
                            f"--config '{name}={{grid: {{h: [..]}}}}') or ask for a configured cell.")


def tracking(table, w, job_key=None, run_name=None):
    check_in_grid(table, w)
    spec = {"results_dir": RESULTS, "experiment": f"{PRESET}/{table}", "cell": cell_of(w)}
    if job_key is not None:
        spec.update(job_key=job_key, run_name=run_name)
    return spec


def group_rule_name(rule, group):
    """The name of a seed group's rule (see SEED_GROUPS)."""
    return rule if group is None or len(SEED_GROUPS) == 1 else f"{rule}_{seeds_label(group).replace('-', '_')}"


def group_log(log_dir, group):
    return f"{log_dir}/seed{{seed}}.log" if group is None else f"{log_dir}/{seeds_label(group)}.log"


def stack_runs(group, lrs=(None,)):
    """A tokenizer rule's runs, ``(seed, lr)`` each: every seed of the group (``None``: the
    {seed} wildcard) at every one of ``lrs`` (lr labels; ``None``: the {lr} wildcard, or no lr)."""
    seeds = [None] if group is None else list(group)
    return [(seed, lr) for lr in lrs for seed in seeds]


def _run_path(path, run):
    seed, lr = run
    if seed is not None:
        path = path.replace("{seed}", str(seed))
    return path if lr is None else path.replace("{lr}", lr)


def run_outputs(run_dir, runs, files):
    """A tokenizer rule's outputs: ``files`` (name -> file name) in ``run_dir`` (a path with
    ``{seed}`` and maybe ``{lr}`` placeholders) filled in for each run of :func:`stack_runs`,
    named ``<name>`` for a rule of one run, ``<name>_<i>`` for run i of several."""
    if len(runs) == 1:
        return {name: f"{_run_path(run_dir, runs[0])}/{file}" for name, file in files.items()}
    return {f"{name}_{i}": f"{_run_path(run_dir, run)}/{file}"
            for i, run in enumerate(runs) for name, file in files.items()}


def tokenizer_job(table, w, output, runs, method_spec, options, run_name, logged=None):
    """The rule's TokenizerJob: its grid point, options and, per run of :func:`stack_runs`, its
    outputs, MLflow child run (``run_name(seed, lr)``, ``lr`` the run's lr label or the {lr}
    wildcard's) and own lr where the rule stacks lrs; ``logged``: further MLflow params of
    every run."""
    job_runs = []
    for i, (seed, lr) in enumerate(runs):
        seed = int(w.seed) if seed is None else seed
        files = {name: str(path) for name, path in output.items()} if len(runs) == 1 else \
            {name[: -len(f"_{i}")]: str(path) for name, path in output.items() if name.endswith(f"_{i}")}
        name = run_name(seed, lr if lr is not None else getattr(w, "lr", None))
        job_runs.append(TokenizerRun(seed, files, tracking(table, w, files.get("tokens"), name),
                                     lr=None if lr is None else float(lr)))
    return TokenizerJob(method=w.method, method_spec=method_spec, k=int(w.k), s=grid_s(w.s), h=int(w.h),
                        options=options, device=CFG["device"], runs=tuple(job_runs), logged=logged or {}).to_params()


def init_tracking_store():
    from hrq.tracking import default_tracking_uri, init_store

    init_store(default_tracking_uri(RESULTS), RESULTS)


def check_tracking_store():
    """Say so when the MLflow store lacks runs whose records lie under results_dir (a deleted or
    emptied mlflow.db): Snakemake would report "Nothing to be done" and never log them again.
    Runs at parse time (onstart is skipped when nothing is to be done), in the main process."""
    from snakemake.logging import logger

    from hrq.runrecords import default_tracking_uri, store_warning

    message = store_warning(default_tracking_uri(RESULTS), RESULTS)
    if message:
        logger.warning(f"WARNING: {message}")


if workflow.is_main_process:
    check_tracking_store()


def stage_shell(stage):
    # One log per job. The stage keeps each attempt's log as <log>.attempt-<start>-<pid> until the
    # attempt succeeds (hrq.attemptlog), so a retry does not lose it. Keep this text stable:
    # Snakemake reruns every job whose shell command changed.
    return (f"OMP_NUM_THREADS={{threads}} MKL_NUM_THREADS={{threads}} {PY} -m hrq.stages {stage} "
            "--job {params.job:q} > {log:q} 2>&1")
