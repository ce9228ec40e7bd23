"""Throughput of Table 2's stages and the projected hours of the paper protocol.

Measured in one run, printed as tables:

1. parsing: ``read_movielens`` and ``sequences_from_interactions`` on a generated MovieLens-10M
   zip of the real size (69,878 users, 10,681 movies, ~10 M ratings; ``--ml-users`` scales it);
2. tokenizer: seconds per epoch of App. C.2's RQ-VAE and HRQ-VAE (768→512→256→128→32, k=3,
   s=256, batch 128) on random unit vectors of a dataset's item count, ratio side by side;
3. recommender: training examples/s of App. C.2's T5 (d 384, 6 heads × 64, ff 1024, batch 256)
   on 20-item histories of 4-token multitokens, and test users/s of the 10-beam trie search;
4. projected device-hours of Table 2: per dataset, 3 tokenizer lrs × 2 VAEs (+ Random) × 8 seeds,
   tokenizers for the protocol's epochs and one recommender per tokenizer, with validation
   every ``eval_every`` epochs.

    python benchmarks/recsys.py                   # CPU
    python benchmarks/recsys.py --device cuda
    python benchmarks/recsys.py --ml-users 7000   # a tenth of ML-10M for the parse step
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

from hrq.data.interactions import sequences_from_interactions  # noqa: E402
from hrq.data.movielens import generate_movielens, read_movielens  # noqa: E402
from hrq.models import train_vae  # noqa: E402
from hrq.seq2seq import MultitokenVocab, PrefixTrie, Seq2SeqConfig, build_model, generate_ranked  # noqa: E402
from hrq.stages.common import build_vae  # noqa: E402

# Users / items / interactions after the protocol (drop < 5, keep the last 20): Amazon from
# Table 3's reference counts with the 5-core review totals, ML-10M as the pipeline measures it.
DATASETS = {
    "amazon_beauty": (22_363, 12_101, 198_502),
    "amazon_sports": (35_598, 18_357, 296_337),
    "amazon_toys": (19_412, 11_924, 167_597),
    "movielens10m": (69_878, 10_681, 1_397_560),
}
LRS, VAES, SEEDS = 3, 2, 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def parse_times(users: int) -> tuple[int, float, float]:
    """(ratings, read seconds, sequence seconds) on a generated ML-10M-format zip."""
    with tempfile.TemporaryDirectory() as tmp:
        path = generate_movielens(Path(tmp) / "ml.zip", users=users, movies=10_681,
                                  ratings_per_user_range=(20, 266), seed=0)
        start = time.perf_counter()
        items, interactions = read_movielens(path)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        sequences_from_interactions(interactions, items, 5, 20)
        return len(interactions), read_s, time.perf_counter() - start


def vae_epoch_seconds(geometry: str, n_items: int, device: torch.device, opts: dict) -> float:
    """Seconds of one :func:`train_vae` epoch (training plus its per-epoch evaluation)."""
    method = {"geometry": geometry, "curvature": 1.0, "residual": "paper"}
    model = build_vae(768, 32, 3, 256, method, {**opts, "kmeans_init": False}).to(device)
    data = torch.nn.functional.normalize(torch.randn(n_items, 768, device=device), dim=-1)
    train_vae(model, data, epochs=1, batch_size=128, lr=1e-3, progress=False)  # warm-up
    _sync(device)
    start = time.perf_counter()
    train_vae(model, data, epochs=1, batch_size=128, lr=1e-3, progress=False)
    _sync(device)
    return time.perf_counter() - start


def recommender_rates(device: torch.device, steps: int, eval_users: int) -> tuple[float, float]:
    """(training examples/s, test users/s) of App. C.2's T5 on 20-item histories."""
    torch.manual_seed(0)
    vocab = MultitokenVocab([256, 256, 256, 16])
    cfg = Seq2SeqConfig(d_model=384, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=6, d_kv=64, dropout=0.1)
    model = build_model(vocab.size, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    items = vocab.encode(torch.cat([torch.randint(256, (12_000, 3)), torch.zeros(12_000, 1, dtype=torch.long)], 1))

    def batch(n):
        history = items[torch.randint(len(items), (n, 20))].flatten(1)
        return history.to(device), items[torch.randint(len(items), (n,))].to(device)

    def train_step():
        src, tgt = batch(256)
        loss = model(input_ids=src, labels=tgt).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    train_rate = 256 * steps / (time.perf_counter() - start)
    model.eval()
    src, _ = batch(eval_users)
    start = time.perf_counter()
    generate_ranked(model, src, PrefixTrie(items), num_beams=10, top_k=10, batch_size=64)
    _sync(device)
    return train_rate, eval_users / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ml-users", type=int, default=69_878, help="users of the generated ML-10M zip")
    parser.add_argument("--vae-items", type=int, default=12_101, help="items per tokenizer epoch (Beauty)")
    parser.add_argument("--steps", type=int, default=5, help="timed recommender training steps")
    parser.add_argument("--eval-users", type=int, default=64)
    parser.add_argument("--tokenizer-epochs", type=int, default=5000)
    parser.add_argument("--seq2seq-epochs", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# device {device}, {torch.get_num_threads()} threads")

    ratings, read_s, seq_s = parse_times(args.ml_users)
    print("\n| step | ratings | seconds |\n|---|---:|---:|")
    print(f"| read_movielens (ratings.dat + movies.dat from the zip) | {ratings:,} | {read_s:.1f} |")
    print(f"| sequences_from_interactions (sort, filter, truncate) | {ratings:,} | {seq_s:.1f} |")

    opts = {"hidden_dims": [512, 256, 128], "commitment": 0.25}
    epoch_s = {g: vae_epoch_seconds(g, args.vae_items, device, opts) for g in ("euclidean", "poincare")}
    print(f"\n| tokenizer ({args.vae_items:,} items, batch 128) | RQ-VAE | HRQ-VAE | HRQ/RQ |\n|---|---:|---:|---:|")
    print(f"| seconds per epoch | {epoch_s['euclidean']:.2f} | {epoch_s['poincare']:.2f} | "
          f"{epoch_s['poincare'] / epoch_s['euclidean']:.2f}× |")

    train_rate, eval_rate = recommender_rates(device, args.steps, args.eval_users)
    print(f"\nrecommender: {train_rate:,.0f} training examples/s, {eval_rate:,.1f} users/s (10 beams)")

    print("\n| dataset | tokenizer h (all seeds, lrs) | recommender h | total h |\n|---|---:|---:|---:|")
    total = 0.0
    for name, (users, n_items, interactions) in DATASETS.items():
        per_item_epoch = (epoch_s["euclidean"] + epoch_s["poincare"]) / 2 / args.vae_items
        tok_h = LRS * VAES * SEEDS * args.tokenizer_epochs * per_item_epoch * n_items / 3600
        examples = interactions - 3 * users  # train prefixes of leave-one-out
        one = (args.seq2seq_epochs * examples / train_rate
               + (args.seq2seq_epochs // args.eval_every + 2) * users / eval_rate) / 3600
        rec_h = (LRS * VAES + 1) * SEEDS * one
        total += tok_h + rec_h
        print(f"| {name} | {tok_h:,.0f} | {rec_h:,.0f} | {tok_h + rec_h:,.0f} |")
    print(f"\nTable 2 projected: {total:,.0f} device-hours on {device}")


if __name__ == "__main__":
    main()
