"""Projected device-hours of the paper preset's Tables 1-4, from a few timed steps of the real
training code, one run beside R stacked runs.

For every training stage of ``preset: paper`` (config.yaml through :func:`hrq.config.load_config`:
grid, seeds, epochs, batch sizes, lrs and model sizes all come from the config) it measures
seconds per optimizer step at the paper's shapes and projects

    device-hours = jobs x steps per job x seconds per step / 3600

on this device, for one run at a time and for R runs stacked into one call (R = ``--stack``,
default the config's ``seeds_per_job``, else its number of seeds). A job is one run: a grid
cell and seed (and tokenizer lr in Tables 2-4), as the pipeline ran them before stacking.
Stages:

1. Table 1 tokenizer, one row per method: :func:`hrq.hierarchy.train_hierarchy_tokenizer` on
   WordNet's 82,115 nouns at the grid's largest ``k, s, h`` (an upper bound for the smaller
   cells), seconds per step from ``train/epoch_seconds`` (epochs after the first), k-means
   codebook init off (a once-per-job cost, seconds, that would dominate a short measurement);
   stacked: ``hrq.hierarchy.train_hierarchy_tokenizers``.
2. Table 1 seq2seq: ``train_seq2seq`` on the stage's own T5 (``hierarchy.seq2seq``),
   multitoken -> multitoken (k + 1 tokens each). Not stackable ("—").
3. Tables 2-4 tokenizer, per trained method and dataset: ``train_vae`` on
   :func:`hrq.stages.common.build_vae` (768-d items, ``recommendation.tokenizer`` options);
   stacked: ``hrq.models.train_vaes``.
4. Tables 2-4 seq2seq, per dataset: ``train_seq2seq`` on ``recommendation.seq2seq``'s T5 with
   histories at the longest train input (``max_length - 3`` items under ``before_split``).

A stacked trainer that this version of hrq lacks (ImportError) prints "n/a".

Data are synthetic with the paper's shapes; nothing is downloaded. Step time does not depend
on the values: random (child, parent) pairs over 82,115 nodes, random unit 768-d item
vectors, random valid token ids. Dataset sizes, which the config does not hold, are the
constants below (WordNet as built by hrq.data.wordnet; Amazon/ML-10M as in
benchmarks/recsys.py). Not counted in the table (printed as notes): each epoch's diagnostics
outside the timed training pass, k-means inits, beam-search evaluation.

    python benchmarks/cost.py                  # ~5 min on one CPU thread
    python benchmarks/cost.py --quick          # ~1.5 min
    python benchmarks/cost.py --device cuda --json cost.json
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import statistics
import sys
import time
import warnings

import torch
import yaml

warnings.filterwarnings("ignore", category=DeprecationWarning)

import hrq  # noqa: E402
from hrq.config import load_config  # noqa: E402
from hrq.grid import level_sizes  # noqa: E402
from hrq.hierarchy import HierarchyTokenizer, train_hierarchy_tokenizer  # noqa: E402
from hrq.models import train_vae  # noqa: E402
from hrq.seq2seq import MultitokenVocab, train_seq2seq  # noqa: E402
from hrq.stages.common import build_method_quantizer, build_vae, seed_everything  # noqa: E402
from hrq.stages.downstream import _model as downstream_model  # noqa: E402  (the stages' own T5)

# (nodes, closure pairs) of the hierarchy datasets (README "WordNet").
HIERARCHY_DATASETS = {"wordnet": (82_115, 743_086), "wordnet_mammal": (1_180, 6_540)}
# (users, items, interactions) after the protocol (drop < 5, keep the last 20), as benchmarks/recsys.py.
RECOMMENDATION_DATASETS = {
    "amazon_beauty": (22_363, 12_101, 198_502),
    "amazon_sports": (35_598, 18_357, 296_337),
    "amazon_toys": (19_412, 11_924, 167_597),
    "movielens10m": (69_878, 10_681, 1_397_560),
}
ITEM_DIM = 768  # all-mpnet-base-v2
EXTRA_TOKENS = 64  # range of the dedup token (data-dependent; a few % of the vocabulary)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _per_step(history: list[dict], steps: int, runs: int = 1) -> float:
    """Mean ``train/epoch_seconds`` of the epochs after the first (warm-up), per step and run."""
    return statistics.mean(h["train/epoch_seconds"] for h in history[1:]) / steps / runs


def _stacked_trainer(module: str, name: str):
    """``module.name``, or None where this version of hrq has no such trainer."""
    return getattr(importlib.import_module(module), name, None)


def _epoch_clock(device: torch.device, stamps: dict[int, float]):
    """An ``on_epoch`` for one run ``(epoch, metrics)`` or a stack ``(run, epoch, metrics)``:
    ``stamps[epoch]`` = when the epoch's last callback came."""
    def on_epoch(*args) -> None:
        _sync(device)
        stamps[args[-2]] = time.perf_counter()
    return on_epoch


def _overhead(history: list[dict], stamps: dict[int, float]) -> float:
    """Mean seconds per epoch (after the first) spent outside the timed training pass: the
    per-epoch diagnostics / evaluation."""
    return statistics.mean(stamps[e] - stamps[e - 1] - history[e]["train/epoch_seconds"]
                           for e in range(1, len(history)))


def time_hierarchy_tokenizer(method: dict, opts: dict, *, n_nodes: int, k: int, s, h: int, relations: int,
                             epochs: int, seeds: list[int], device: torch.device) -> dict:
    """Seconds per step of one (and of ``len(seeds)`` stacked) Table 1 tokenizer run(s), and
    the per-epoch diagnostics outside the timed pass (seconds per epoch and run)."""
    pairs = torch.randint(n_nodes - 1, (relations, 2), generator=torch.Generator().manual_seed(0))
    pairs[:, 1] += pairs[:, 1] >= pairs[:, 0]  # no self-loops
    steps = math.ceil(relations / opts["batch_size"])
    train = dict(epochs=epochs + 1, lr=opts["lr"], batch_size=opts["batch_size"], negatives=opts["negatives"],
                 warmup_epochs=1, warmup_lr=opts["warmup_lr"], codebook_optimizer=method.get("codebook_optimizer"),
                 progress=False)  # epoch 0 is the burn-in, untimed (and compiles, when compiled)
    stacked = _stacked_trainer("hrq.hierarchy", "train_hierarchy_tokenizers")
    if stacked is not None and "compiled" in inspect.signature(stacked).parameters:
        train["compiled"] = bool(opts.get("compile", False))  # as the preset's jobs train (both columns)

    def build(seed: int) -> HierarchyTokenizer:
        # k-means init off: a once-per-job cost (12-31 s a run at 82,115 nodes on one CPU thread)
        # that would dominate a short measurement; the training step does not depend on it.
        seed_everything(seed)
        quantizer = build_method_quantizer(method, k, s, h, {"commitment": opts["commitment"], "kmeans_init": False})
        return HierarchyTokenizer(n_nodes, h, quantizer=quantizer, init_scale=opts["init_scale"]).to(device)

    stamps: dict[int, float] = {}
    history = train_hierarchy_tokenizer(build(seeds[0]), pairs, seed=seeds[0],
                                        on_epoch=_epoch_clock(device, stamps), **train)
    out = {"single": _per_step(history, steps), "stacked": "n/a", "overhead_single": _overhead(history, stamps),
           "overhead_stacked": "n/a"}
    if stacked is not None:
        histories = stacked([build(seed) for seed in seeds], pairs, seeds=seeds,
                            on_epoch=_epoch_clock(device, stamps), **train)
        out["stacked"] = _per_step(histories[0], steps, len(seeds))
        out["overhead_stacked"] = _overhead(histories[0], stamps) / len(seeds)
    return out


def time_seq2seq(opts: dict, sizes: list[int], *, source_items: int, steps: int, epochs: int,
                 device: torch.device) -> dict:
    """Seconds per step of ``train_seq2seq`` on the stage's T5: sources of ``source_items``
    multitokens, one multitoken target, ``steps`` batches per epoch, the first epoch untimed."""
    vocab = MultitokenVocab(sizes)
    n, gen = steps * opts["batch_size"], torch.Generator().manual_seed(0)

    def multitokens(count: int) -> torch.Tensor:
        return vocab.encode(torch.stack([torch.randint(size, (count,), generator=gen) for size in sizes], -1))

    sources = multitokens(n * source_items).view(n, -1)
    seed_everything(0)
    model = downstream_model(vocab, opts)
    stamps: dict[int, float] = {}
    train_seq2seq(model, sources, multitokens(n), epochs=epochs + 1, batch_size=opts["batch_size"], lr=opts["lr"],
                  device=device, schedule=opts.get("schedule", "constant"), warmup_steps=opts.get("warmup_steps", 0),
                  on_epoch=_epoch_clock(device, stamps), progress=False)
    return {"single": (stamps[epochs] - stamps[0]) / epochs / steps, "stacked": "—"}


def time_vae(method: dict, opts: dict, *, k: int, s, h: int, steps: int, epochs: int, seeds: list[int],
             device: torch.device, lrs: list[float] | None = None) -> dict:
    """Seconds per step of one Tables 2-4 tokenizer run, and of one run among the stack of
    ``seeds`` (each at every one of ``lrs`` when given, as ``stack_lrs`` trains them), on
    ``steps`` batches of random unit vectors; and the per-epoch evaluation as a share of the
    training pass (both scale with the item count)."""
    data = torch.randn(steps * opts["batch_size"], ITEM_DIM, generator=torch.Generator().manual_seed(0))
    data = torch.nn.functional.normalize(data, dim=-1).to(device)
    train = dict(epochs=epochs + 1, batch_size=opts["batch_size"], lr=opts["lr"][0],  # every lr costs the same
                 kmeans_sample=opts.get("kmeans_sample"), progress=False)

    def build(seed: int):
        seed_everything(seed)
        return build_vae(ITEM_DIM, h, k, s, method, opts).to(device)

    stamps: dict[int, float] = {}
    history = train_vae(build(seeds[0]), data, seed=seeds[0], on_epoch=_epoch_clock(device, stamps), **train)
    out = {"single": _per_step(history, steps), "stacked": "n/a",
           "eval_share": _overhead(history, stamps) / _per_step(history, 1)}
    stacked = _stacked_trainer("hrq.models", "train_vaes")
    if stacked is not None:
        runs = [(seed, lr) for lr in (lrs or [train["lr"]]) for seed in seeds]
        lr = [lr for _, lr in runs] if lrs else train["lr"]
        history = stacked([build(seed) for seed, _ in runs], data, seeds=[seed for seed, _ in runs],
                          **{**train, "lr": lr})
        out["stacked"] = _per_step(history[0], steps, len(runs))
    return out


def project(jobs: int, steps: int, seconds) -> float | str:
    """Device-hours of ``jobs`` runs of ``steps`` steps at ``seconds`` per step (a string passes)."""
    return jobs * steps * seconds / 3600 if isinstance(seconds, float) else seconds


def _largest(grid: dict) -> tuple[int, object, int]:
    k = max(grid["k"])
    return k, max(grid["s"], key=lambda s: sum(level_sizes(k, s))), max(grid["h"])


def measure(config: dict, args, device: torch.device) -> tuple[list[dict], list[str]]:
    """The table's rows (one per stage, method and dataset) and the notes, all measured here."""
    seeds = list(config["seeds"])
    stack = args.stack or config.get("seeds_per_job") or len(seeds)
    stack_seeds = (seeds + list(range(max(seeds) + 1, max(seeds) + 1 + stack)))[:stack]
    rows, notes = [], [f"jobs: one run each (grid cell x seed, x tokenizer lr in Tables 2-4); stacked: "
                       f"{stack} runs per call, the seconds per step of one of them"]

    def row(table, stage, dataset, method, jobs, steps, timing):
        rows.append({"table": table, "stage": stage, "dataset": dataset, "method": method, "jobs": jobs,
                     "steps_per_job": steps, "s_per_step_single": timing["single"],
                     "s_per_step_stacked": timing["stacked"],
                     "hours_single": project(jobs, steps, timing["single"]),
                     "hours_stacked": project(jobs, steps, timing["stacked"])})

    hier = config["hierarchy"]
    k, s, h = _largest(hier["grid"])
    cells = math.prod(len(v) for v in hier["grid"].values())
    opts = hier["tokenizer"]
    for name in hier["datasets"]:
        nodes, pairs = HIERARCHY_DATASETS[name]
        train_pairs = round(pairs * (1 - hier["test_fraction"]))
        jobs = cells * len(seeds)
        if args.eager:
            opts = {**opts, "compile": False}
        notes.append(f"Table 1 tokenizer steps {'compiled' if opts.get('compile') else 'eager'} "
                     "(hierarchy.tokenizer.compile; --eager to compare), compiling in the untimed first epoch")
        for method, spec in hier["methods"].items():
            t = time_hierarchy_tokenizer(spec, opts, n_nodes=args.nodes or nodes, k=k, s=s, h=h,
                                         relations=args.relations, epochs=args.epochs, seeds=stack_seeds, device=device)
            steps = math.ceil(train_pairs / opts["batch_size"])
            row("Table 1", "tokenizer", name, method, jobs, steps * opts["epochs"], t)
            share = {mode: t[f"overhead_{mode}"] / (steps * t[mode]) if isinstance(t[mode], float) else "n/a"
                     for mode in ("single", "stacked")}
            notes.append(f"Table 1 tokenizer {method}: per-epoch diagnostics (codes of all {args.nodes or nodes:,} "
                         f"nodes) outside the timed pass, seconds per epoch and run: {t['overhead_single']:.2f} "
                         f"single, {_num(t['overhead_stacked'], '.2f')} stacked = {_num(share['single'], '.1%')} / "
                         f"{_num(share['stacked'], '.1%')} of a paper epoch ({steps:,} steps)")
        seq = hier["seq2seq"]
        t = time_seq2seq(seq, [*level_sizes(k, s), EXTRA_TOKENS], source_items=1, steps=args.seq2seq_steps,
                         epochs=args.epochs, device=device)
        row("Table 1", "seq2seq", name, "+".join(hier["methods"]), jobs * len(hier["methods"]),
            math.ceil(train_pairs / seq["batch_size"]) * seq["epochs"], t)

    rec = config["recommendation"]
    k, s, h = _largest(rec["grid"])
    cells = math.prod(len(v) for v in rec["grid"].values())
    opts, lrs = rec["tokenizer"], len(rec["tokenizer"]["lr"])
    trained = {m: spec for m, spec in rec["methods"].items() if spec["kind"] != "random"}
    # stack_lrs: a job stacks its seeds at every tokenizer lr (a VAEStack that takes per-run lrs)
    stack_lrs = opts.get("stack_lrs") and lrs > 1 and \
        hasattr(getattr(importlib.import_module("hrq.models"), "VAEStack", None), "param_groups")
    vae = {m: time_vae(spec, opts, k=k, s=s, h=h, steps=args.steps, epochs=args.epochs, seeds=stack_seeds,
                       device=device, lrs=opts["lr"] if stack_lrs else None) for m, spec in trained.items()}
    notes.append(f"Tables 2-4 tokenizer stacked: {len(stack_seeds) * (lrs if stack_lrs else 1)} runs per call "
                 f"({len(stack_seeds)} seeds{f' x {lrs} lrs, recommendation.tokenizer.stack_lrs' if stack_lrs else ''})")
    notes += [f"Tables 2-4 tokenizer {m}: the per-epoch evaluation over all items (single run) adds "
              f"{t['eval_share']:.0%} to the training pass" for m, t in vae.items()]
    seq = rec["seq2seq"]
    max_length = max(config["datasets"][d].get("max_length", 20) for d in rec["datasets"])
    source_items = max_length - 3 if rec.get("truncation", "before_split") == "before_split" else max_length
    t_seq = time_seq2seq(seq, [*level_sizes(k, s), EXTRA_TOKENS], source_items=source_items, steps=args.seq2seq_steps,
                         epochs=args.epochs, device=device)
    recommenders = sum(lrs if spec["kind"] != "random" else 1 for spec in rec["methods"].values())
    for name in rec["datasets"]:
        users, items, interactions = RECOMMENDATION_DATASETS[name]
        for m, t in vae.items():
            row("Tables 2-4", "tokenizer", name, m, cells * lrs * len(seeds),
                math.ceil(items / opts["batch_size"]) * opts["epochs"], t)
        examples = interactions - 3 * users  # leave-one-out train prefixes (hrq.recsys.protocol)
        row("Tables 2-4", "seq2seq", name, "+".join(rec["methods"]), cells * recommenders * len(seeds),
            math.ceil(examples / seq["batch_size"]) * seq["epochs"], t_seq)
    notes.append(f"Tables 2-4 seq2seq: every batch at the longest train input, {source_items} items x {k + 1} "
                 f"tokens; beam-search validation every {seq.get('eval_every')} epochs not counted")
    return rows, notes


def _num(x, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else x


def print_table(rows: list[dict], notes: list[str]) -> None:
    """One Markdown table, with a total line per table; a stacked total counts non-stackable
    stages ("—") at their single hours and is "n/a" if a stackable stage was not measured."""
    print("| table | stage | dataset | method | jobs | steps/job | s/step single | s/step stacked (per run) "
          "| stacked/single throughput | device-h single | device-h stacked |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for table in dict.fromkeys(r["table"] for r in rows):
        part = [r for r in rows if r["table"] == table]
        for r in part:
            stacked = r["s_per_step_stacked"]
            ratio = f"{r['s_per_step_single'] / stacked:.2f}x" if isinstance(stacked, float) else stacked
            print(f"| {table} | {r['stage']} | {r['dataset']} | {r['method']} | {r['jobs']:,} | {r['steps_per_job']:,} "
                  f"| {r['s_per_step_single']:.4g} | {_num(stacked, '.4g')} | {ratio} "
                  f"| {r['hours_single']:,.1f} | {_num(r['hours_stacked'], ',.1f')} |")
        stacked = [r["hours_stacked"] if r["hours_stacked"] != "—" else r["hours_single"] for r in part]
        total = sum(stacked) if all(isinstance(x, float) for x in stacked) else "n/a"
        print(f"| **{table} total** | | | | {sum(r['jobs'] for r in part):,} | | | | "
              f"| **{sum(r['hours_single'] for r in part):,.1f}** | **{_num(total, ',.1f')}** |")
    print()
    for note in notes:
        print(f"- {note}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer relations, steps and epochs (~1.5 min)")
    parser.add_argument("--stack", type=int, default=0,
                        help="R runs per stacked call (default: the config's seeds_per_job, else its number of seeds)")
    parser.add_argument("--relations", type=int, help="random (child, parent) pairs per tokenizer epoch (2000)")
    parser.add_argument("--steps", type=int, help="steps per epoch of the VAE tokenizers (20)")
    parser.add_argument("--seq2seq-steps", type=int, help="steps per epoch of the seq2seq models (2)")
    parser.add_argument("--epochs", type=int, help="timed epochs after one warm-up epoch (3)")
    parser.add_argument("--nodes", type=int, help="nodes of the tokenizer's embedding (default: the dataset's)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=YAML",
                        help="overrides of the paper preset, as snakemake --config (e.g. seeds=[0,1])")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--eager", action="store_true", help="Table 1 tokenizer steps eager even where the preset compiles them")
    args = parser.parse_args(argv)
    sizes = ({"relations": 500, "steps": 5, "seq2seq_steps": 1, "epochs": 1} if args.quick else
             {"relations": 2000, "steps": 20, "seq2seq_steps": 2, "epochs": 3})
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.config)}
    config = load_config(preset="paper", **overrides)

    header = {"loadavg": os.getloadavg(), "torch_threads": torch.get_num_threads(), "device": str(device),
              "hrq": os.path.dirname(hrq.__file__), "torch": torch.__version__}
    print(f"# loadavg {' '.join(f'{x:.2f}' for x in header['loadavg'])}, {header['torch_threads']} torch threads, "
          f"device {device}, hrq from {header['hrq']}")
    print(f"# measured: {args.relations} relations/epoch (Table 1 tokenizer), {args.steps} steps/epoch (VAE), "
          f"{args.seq2seq_steps} steps/epoch (seq2seq), {args.epochs} timed epoch(s) after 1 warm-up, "
          f"stacks of {args.stack or config.get('seeds_per_job') or len(config['seeds'])}\n")
    sys.stdout.flush()
    start, cpu = time.perf_counter(), time.process_time()
    rows, notes = measure(config, args, device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    # well below 100% on a CPU: other processes took cores from the measurement
    notes.append(f"measured in {wall:.0f} s; this process used {cpu / wall / torch.get_num_threads():.0%} of "
                 f"{torch.get_num_threads()} thread(s) x that time")
    print_table(rows, notes)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**header, "args": vars(args), "rows": rows, "notes": notes}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
