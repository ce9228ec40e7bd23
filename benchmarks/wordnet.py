"""Throughput of Table 1's two training jobs on the WordNet noun closure, and the projected
hours of the full grid.

* tokenizer: train relations/s of the joint embedding + (H)RQ trainer (paper §4.1), RQ vs HRQ,
  measured over ``--batches`` batches of one epoch at the paper's settings (batch 50, 50
  negatives, lr 1.0, k=4, s=256, h=32 unless given);
* seq2seq: hypernym pairs/s of one training step of App. C.1's T5 (4+4 layers, d=256, ff 1024,
  8 heads, batch 256), and test nouns/s of the 10-beam trie-constrained search.

From these, hours for one tokenizer (1500 epochs), one seq2seq run (100 epochs + test) and the
whole grid (2 methods × 24 (k, s, h) × 8 seeds), printed in one table, RQ and HRQ side by side.
The tokenizer rate is measured at h=32 and used for every h (an upper bound on time: smaller h
is not slower).

    python benchmarks/wordnet.py                     # CPU, real WordNet (see README)
    python benchmarks/wordnet.py --device cuda
    python benchmarks/wordnet.py --root mammal.n.01  # a subtree, e.g. without much memory
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)

from hrq.data.wordnet import noun_closure, open_wordnet, subtree  # noqa: E402
from hrq.hierarchy import HierarchyTokenizer, RelationSampler, TokenizerStack  # noqa: E402
from hrq.seq2seq import MultitokenVocab, PrefixTrie, Seq2SeqConfig, build_model, generate_ranked  # noqa: E402

GRID_POINTS = 2 * 3 * 4  # k ∈ {3,4} × s ∈ {64,128,256} × h ∈ {4,8,16,32}
SEEDS = 8
TOKENIZER_EPOCHS = 1500
SEQ2SEQ_EPOCHS = 100


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def closure(root: str | None) -> tuple[int, torch.Tensor]:
    """Number of nouns and the ``[E, 2]`` relation ids of the (sub)closure."""
    with tempfile.TemporaryDirectory() as work:
        pairs = noun_closure(open_wordnet(None, Path(work)))
    if root:
        pairs = subtree(pairs, root)
    names = sorted({n for pair in pairs for n in pair})
    index = {n: i for i, n in enumerate(names)}
    return len(names), torch.tensor([[index[c], index[p]] for c, p in pairs], dtype=torch.long)


def tokenizer_rate(geometry: str, n_nodes: int, train: torch.Tensor, args, device: torch.device) -> float:
    """Train relations per second of the tokenizer's inner loop (the same code as
    :func:`hrq.hierarchy.train_hierarchy_tokenizer`: loss, backward, Riemannian SGD step)."""
    import geoopt

    model = HierarchyTokenizer(n_nodes, args.h, args.k, args.s, geometry=geometry).to(device)
    model.quantizer.init_from(model.embedding.detach())  # k-means init, as at the end of the warm-up
    stack = TokenizerStack([model])  # one run; benchmarks/cost.py compares stacks of seeds
    books = geoopt.optim.RiemannianSGD(stack.quantizer.parameters(), lr=1.0)
    gen = torch.Generator(device=device).manual_seed(0)
    sampler = RelationSampler(train.to(device), n_nodes, 50, [gen])
    batches = sampler.batches(args.batch_size)

    def step():
        child, parent, neg, valid = next(batches)
        rel, q = stack.losses(child, parent, neg, valid)
        books.zero_grad(set_to_none=True)
        (rel + 2 * q).sum().backward()
        books.step()
        stack.step_rows(1.0)
        return child.numel()

    for _ in range(5):
        step()
    _sync(device)
    start, seen = time.perf_counter(), 0
    for _ in range(args.batches):
        seen += step()
    _sync(device)
    return seen / (time.perf_counter() - start)


def seq2seq_rates(args, device: torch.device) -> tuple[float, float]:
    """(train pairs/s, test nouns/s) of App. C.1's T5 on random multitokens of the grid's
    largest cell (k=4, s=256 plus the extra token)."""
    torch.manual_seed(0)
    vocab = MultitokenVocab([256] * 4 + [32])
    cfg = Seq2SeqConfig(d_model=256, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=8, d_kv=32, dropout=0.1)
    model = build_model(vocab.size, cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    codes = torch.cat([torch.randint(256, (4096, 4)), torch.zeros(4096, 1, dtype=torch.long)], 1)
    tokens = vocab.encode(codes)

    def train_step():
        idx = torch.randint(4096, (256,))
        src, tgt = tokens[idx].to(device), tokens[torch.randint(4096, (256,))].to(device)
        loss = model(input_ids=src, labels=tgt).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        train_step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.seq2seq_steps):
        train_step()
    _sync(device)
    train_rate = 256 * args.seq2seq_steps / (time.perf_counter() - start)

    model.eval()
    trie = PrefixTrie(tokens)
    queries = tokens[: args.eval_nouns].to(device)
    start = time.perf_counter()
    generate_ranked(model, queries, trie, num_beams=10, top_k=10, batch_size=64)
    _sync(device)
    return train_rate, args.eval_nouns / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", default=None, help="measure on this synset's subtree instead")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--s", type=int, default=256)
    parser.add_argument("--h", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--seq2seq-steps", type=int, default=5)
    parser.add_argument("--eval-nouns", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)

    n_nodes, relations = closure(args.root)
    n_train = int(round(0.85 * relations.shape[0]))
    perm = torch.randperm(relations.shape[0], generator=torch.Generator().manual_seed(0))
    train = relations[perm[:n_train]]
    n_test_nouns = int(relations[perm[n_train:], 0].unique().numel())  # one beam search per noun
    print(f"# WordNet {'subtree ' + args.root if args.root else 'noun closure'}: {n_nodes:,} nouns, "
          f"{relations.shape[0]:,} relations ({n_train:,} train); device {device}, "
          f"{torch.get_num_threads()} threads; k={args.k} s={args.s} h={args.h}, batch {args.batch_size}")

    rates = {g: tokenizer_rate(g, n_nodes, train, args, device) for g in ("euclidean", "poincare")}
    pairs_per_s, nouns_per_s = seq2seq_rates(args, device)
    seq2seq_h = (SEQ2SEQ_EPOCHS * n_train / pairs_per_s + n_test_nouns / nouns_per_s) / 3600

    rows = []
    for g, label in (("euclidean", "RQ"), ("poincare", "HRQ")):
        epoch_s = n_train / rates[g]
        tok_h = TOKENIZER_EPOCHS * epoch_s / 3600
        rows.append((label, rates[g], epoch_s, tok_h, seq2seq_h, GRID_POINTS * SEEDS * (tok_h + seq2seq_h)))
    print(f"\n| method | tokenizer relations/s | s/epoch | h/tokenizer ({TOKENIZER_EPOCHS} ep) "
          f"| h/seq2seq ({SEQ2SEQ_EPOCHS} ep + test) | grid hours ({GRID_POINTS} cells × {SEEDS} seeds) |")
    print("|---|---|---|---|---|---|")
    for label, rate, epoch_s, tok_h, s2s_h, grid_h in rows:
        print(f"| {label} | {rate:,.0f} | {epoch_s:,.1f} | {tok_h:,.1f} | {s2s_h:,.1f} | {grid_h:,.0f} |")
    print(f"\nHRQ/RQ tokenizer time ratio: {rates['euclidean'] / rates['poincare']:.2f}×; "
          f"seq2seq: {pairs_per_s:,.0f} train pairs/s, {nouns_per_s:,.1f} test nouns/s (10 beams); "
          f"Table 1 total: {sum(r[5] for r in rows):,.0f} device-hours")


if __name__ == "__main__":
    main()
