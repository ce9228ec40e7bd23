"""Codes used per level after one (H)RQ-VAE epoch: how alive the codebooks start (issue 13).

Builds a seeded set of clustered items (the leaves of a synthetic taxonomy, by default
8^4 = 4,096 64-d items in nested clusters), trains the pipeline's own tokenizer
(:func:`hrq.stages.common.build_vae` + :func:`hrq.models.train_vae`, the paper protocol's
tokenizer options: hidden 512-256-128, h = 32, batch 128, lr 1e-3, and config.yaml's
``recommendation.tokenizer`` init options: ``commitment``, ``kmeans_init``, ``kmeans_sample``,
``dead_code_threshold``, ``usage_decay``, those it has) with k = 3, s = 256 for one epoch, and
prints per method the codewords used at each level (out of s), the whole-multitoken collision
rate and the reconstruction error over all items.

Methods: ``rqvae`` (Euclidean), ``hrqvae`` (Poincaré), and the related kinds of
:func:`hrq.quantize.build_quantizer` that a codebook init applies to (``hgrec``;
``hypervq_hrq`` chooses codes by hyperplanes, not nearest codewords, and is shown as a
reference). ``--kmeans-sample``, ``--dead-code-threshold`` and ``--usage-decay`` override the
config's options of the same names (when the installed ``hrq`` has them); each value given is
its own row.

    python benchmarks/codebook_init.py
    python benchmarks/codebook_init.py --kmeans-sample 0 -1 --dead-code-threshold 0 0.5
    python benchmarks/codebook_init.py --vectors results/demo/embeddings/synthetic_catalog.parquet \
        --levels 2 --size 16 --latent-dim 8 --hidden-dims 64 32 --batch-size 64 --lr 0.003 --epochs 25
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

from hrq.data import make_taxonomy  # noqa: E402
from hrq.models import evaluate_vae, train_vae  # noqa: E402
from hrq.stages.common import build_vae  # noqa: E402

METHODS = {
    "rqvae": {"kind": "vae", "geometry": "euclidean"},
    "hrqvae": {"kind": "vae", "geometry": "poincare", "curvature": 1.0, "residual": "paper"},
    "hgrec": {"kind": "vae", "quantizer": "hgrec", "reconstruction": "hyperbolic"},
    "hypervq_hrq": {"kind": "vae", "quantizer": "hypervq_hrq"},
    "rsqvae": {"kind": "vae", "quantizer": "rsq", "reconstruction": "gaussian"},
}


# The tokenizer options a VAE job takes from recommendation.tokenizer (those config.yaml has).
INIT_OPTIONS = ("commitment", "kmeans_init", "kmeans_sample", "dead_code_threshold", "usage_decay")


def pipeline_options() -> dict:
    """config.yaml's recommendation.tokenizer options of the paper protocol, as jobs get them."""
    from hrq.config import load_config

    tokenizer = load_config(preset="paper")["recommendation"]["tokenizer"]
    return {k: tokenizer[k] for k in INIT_OPTIONS if k in tokenizer}


def run(method: str, data: torch.Tensor, args: argparse.Namespace, extra: dict) -> dict[str, object]:
    """Train one tokenizer for ``args.epochs`` epochs and return its diagnostics row."""
    opts = {"hidden_dims": args.hidden_dims, **pipeline_options(), **extra}
    # kmeans_sample is a train_vae argument (where the init data comes from), the rest builder options
    train_kw = {"kmeans_sample": opts.pop("kmeans_sample")} if "kmeans_sample" in opts else {}
    torch.manual_seed(args.seed)
    try:
        model = build_vae(data.shape[1], args.latent_dim, args.levels, args.size, METHODS[method], opts)
    except (TypeError, KeyError, ValueError) as err:  # an option this version does not have
        return {"method": method, **extra, "error": str(err)}
    start = time.perf_counter()
    history = train_vae(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, progress=False, **train_kw)
    seconds = time.perf_counter() - start
    metrics = evaluate_vae(model, data)
    sizes = model.quantizer.codebook_sizes
    used = [round(metrics[f"usage/l{i}"] * sizes[i]) for i in range(len(sizes))]
    return {"method": method, **extra, "used": used, "sizes": sizes,
            "collision_rate": metrics["collision_rate"],
            "largest_group": int(metrics["largest_collision_group"]),
            "reconstruction": metrics["reconstruction_loss"],
            "train_recon_epoch0": history[0]["train/reconstruction_loss"], "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["rqvae", "hrqvae", "hgrec", "hypervq_hrq", "rsqvae"],
                    choices=list(METHODS))
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--branching", type=int, default=8)
    ap.add_argument("--leaves-per-node", type=int, default=1)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--vectors", default=None,
                    help="an embeddings Parquet of the pipeline (e.g. results/demo/embeddings/"
                         "synthetic_catalog.parquet) instead of the synthetic taxonomy")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--latent-dim", type=int, default=32)
    ap.add_argument("--hidden-dims", type=int, nargs="+", default=[512, 256, 128])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kmeans-sample", type=int, nargs="+", default=None,
                    help="kmeans_sample values to compare (-1: all items, 0: first-batch init)")
    ap.add_argument("--dead-code-threshold", type=float, nargs="+", default=None,
                    help="tokenizer dead_code_threshold values to compare (0: off)")
    ap.add_argument("--usage-decay", type=float, nargs="+", default=None,
                    help="tokenizer usage_decay values to compare")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.vectors:
        from hrq.stages.data import load_vectors

        data, source = load_vectors(args.vectors), args.vectors
    else:
        data = make_taxonomy(args.depth, args.branching, args.dim, leaves_per_node=args.leaves_per_node,
                             seed=args.data_seed).vectors
        source = (f"taxonomy depth {args.depth}, branching {args.branching}, {args.leaves_per_node} per leaf, "
                  f"seed {args.data_seed}")
    print(f"{data.shape[0]} clustered {data.shape[1]}-d items ({source}); "
          f"k={args.levels}, s={args.size}, h={args.latent_dim}, hidden {args.hidden_dims}, "
          f"{args.epochs} epoch(s), batch {args.batch_size}, lr {args.lr}\n")
    samples = None if args.kmeans_sample is None else [None if n < 0 else n for n in args.kmeans_sample]
    grid = {"kmeans_sample": samples, "dead_code_threshold": args.dead_code_threshold,
            "usage_decay": args.usage_decay}
    axes = {k: v for k, v in grid.items() if v is not None}
    extras = [dict(zip(axes, values)) for values in itertools.product(*axes.values())] or [{}]
    head = ["method", *axes, *(f"used l{i}" for i in range(args.levels)), "collision rate",
            "largest group", "recon (eval)", "train s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for method, extra in itertools.product(args.methods, extras):
        row = run(method, data, args, extra)
        cells = [method, *(str(extra[k]) for k in axes)]
        if "error" in row:
            print("| " + " | ".join(cells) + f" | error: {row['error']} |", flush=True)
            continue
        cells += [f"{u}/{s}" for u, s in zip(row["used"], row["sizes"])]
        cells += [f"{row['collision_rate']:.3f}", str(row["largest_group"]), f"{row['reconstruction']:.4f}",
                  f"{row['seconds']:.1f}"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
