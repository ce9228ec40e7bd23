"""CPU demo of the core library: RQ-VAE vs HRQ-VAE on a synthetic taxonomy.

Trains each tokenizer for a few epochs on leaves of a random tree (known hierarchy) over
several seeds, and prints mean ± std of what the paper's tables are built from: reconstruction
error, codebook usage and perplexity, multitoken collisions, how well the first token recovers
the top-level subtree, and the coefficient of variation of latent norms (paper Table 4).

    python -m hrq.demo                 # ~1 minute on 2 CPU cores
    python -m hrq.demo --epochs 100 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from hrq.data import make_taxonomy
from hrq.models import ResidualQuantizedVAE, evaluate_vae, train_vae
from hrq.quantize import first_token_purity

METHODS = {
    "RQ-VAE": dict(geometry="euclidean"),
    "HRQ-VAE (paper)": dict(geometry="poincare", residual="paper"),
    "HRQ-VAE (gyro)": dict(geometry="poincare", residual="gyro"),
}


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    taxonomy = make_taxonomy(args.depth, args.branching, args.dim, leaves_per_node=args.leaves_per_node, seed=seed)
    torch.manual_seed(seed)
    model = ResidualQuantizedVAE(
        args.dim, args.latent_dim, (128, 64), levels=args.levels, codebook_size=args.codebook_size,
        kmeans_init=True, **METHODS[method],
    )
    start = time.perf_counter()
    train_vae(model, taxonomy.vectors, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              seed=seed, progress=args.progress)
    seconds = time.perf_counter() - start
    metrics = evaluate_vae(model, taxonomy.vectors)
    codes = model.encode(taxonomy.vectors)
    norms = model.latent_norms(taxonomy.vectors)
    return {
        "reconstruction": metrics["reconstruction_loss"],
        "usage l0": metrics["usage/l0"],
        "perplexity l0": metrics["perplexity/l0"],
        "collision rate": metrics["collision_rate"],
        "first-token purity": first_token_purity(codes[:, 0], taxonomy.top_level),
        "norm CV (Table 4)": float(norms.std() / norms.mean()),
        "train s": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--branching", type=int, default=8)
    ap.add_argument("--leaves-per-node", type=int, default=1)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--latent-dim", type=int, default=8)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--progress", action="store_true", help="show a progress bar per run")
    args = ap.parse_args(argv)

    n = args.branching**args.depth * args.leaves_per_node
    print(f"synthetic taxonomy: depth {args.depth}, branching {args.branching}, {n} leaves, "
          f"{args.dim}-d; k={args.levels}, s={args.codebook_size}, h={args.latent_dim}; "
          f"{args.epochs} epochs; seeds {args.seeds}\n")
    rows = {m: [run_one(m, s, args) for s in args.seeds] for m in METHODS}
    cols = list(next(iter(rows.values()))[0])
    print("| method | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for method, runs in rows.items():
        cells = []
        for c in cols:
            vals = [r[c] for r in runs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.3f} ± {sd:.3f}")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
