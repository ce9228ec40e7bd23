"""Downstream stages: one seed's seq2seq on fixed multitokens, evaluated on held-out data.

* hypernym generation (Table 1): source = a noun's multitoken, target = one of its
  hypernyms' multitokens; trained on the train relations. For each test noun the model
  returns its 10 best multitokens by beam search constrained to existing nouns' multitokens;
  a test relation (u, v) is a hit when v's whole multitoken is among u's 10 ("recall@10", the
  mean over test relations).
* recommendation (Table 2): source = the concatenated multitokens of a user's history
  (≤ max_length items), target = the next item's multitoken; leave-one-out. A hit needs the
  whole multitoken, extra token included. Recall/NDCG@5/10 on the test targets; the same on
  the validation targets under ``valid/``. With ``seq2seq.eval_every`` the validation metric
  ``selection`` is computed every that many epochs and the test numbers are those of the best
  checkpoint (``best_epoch``, 1-based).

Output ``metrics.parquet`` is the long per-seed schema (seed, metric, value).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np
import torch

from hrq.baselines import nonfrequent_mask
from hrq.io import read_parquet, write_parquet
from hrq.recsys import leave_one_out
from hrq.seq2seq import (
    MultitokenVocab,
    PrefixTrie,
    Seq2SeqConfig,
    build_model,
    generate_ranked,
    ndcg_at,
    rank_of,
    recall_at,
    train_seq2seq,
)
from hrq.stages.common import device_for, epoch_logger, job_run, metrics_frame, seed_everything

MODEL_KEYS = ("d_model", "d_ff", "num_layers", "num_heads", "d_kv", "dropout")


def load_multitokens(path) -> torch.Tensor:
    """``LongTensor [n_entities, L]`` codes from a tokens Parquet, rows ordered by entity_id."""
    df = read_parquet(path).sort_values("entity_id")
    return torch.from_numpy(np.stack(df["codes"].to_numpy()).astype(np.int64))


def _model(vocab: MultitokenVocab, opts: Mapping[str, Any]):
    cfg = Seq2SeqConfig(**{k: opts[k] for k in MODEL_KEYS}, num_decoder_layers=opts["num_layers"])
    return build_model(vocab.size, cfg)


def _vocab(codes: torch.Tensor) -> MultitokenVocab:
    # Every level's size is what the codes use, so the extra token's range is data-dependent.
    return MultitokenVocab((codes.max(0).values + 1).tolist())


def hypernym_generation(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    seed, opts = params["seed"], params["seq2seq"]
    device = device_for(params)
    codes = load_multitokens(inputs["tokens"])
    rel = read_parquet(inputs["relations"])
    vocab = _vocab(codes)
    tokens = vocab.encode(codes)
    train = rel[rel["split"] == "train"]
    test = rel[rel["split"] == "test"]
    src = tokens[torch.tensor(train["child"].to_numpy())]
    tgt = tokens[torch.tensor(train["parent"].to_numpy())]
    seed_everything(seed)
    model = _model(vocab, opts)
    hyper = {"seed": seed, "seq2seq": opts, "device": str(device), "train_pairs": len(train),
             "test_pairs": len(test), "vocab": list(vocab.level_sizes)}
    with job_run(params, hyper) as run:
        start = time.perf_counter()
        train_seq2seq(model, src, tgt, epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                      seed=seed, device=device, on_epoch=epoch_logger(run, "seq2seq"))
        seconds = time.perf_counter() - start
        nouns, inverse = np.unique(test["child"].to_numpy(), return_inverse=True)
        ranked = generate_ranked(model, tokens[torch.from_numpy(nouns)], PrefixTrie(tokens),
                                 num_beams=opts["num_beams"], top_k=10, device=device)
        ranks = rank_of(ranked[torch.from_numpy(inverse)], tokens[torch.tensor(test["parent"].to_numpy())])
        # Recall on the test pairs whose hypernym is not one of the 10 most frequent train
        # hypernyms: the part of the metric a constant frequent-ancestor answer cannot score.
        rare = nonfrequent_mask(torch.tensor(train["parent"].to_numpy()), torch.tensor(test["parent"].to_numpy()))
        metrics = {"recall@10": recall_at(ranks, 10), "recall@1": recall_at(ranks, 1),
                   "recall@10_nonfrequent": recall_at(ranks[rare], 10) if bool(rare.any()) else math.nan,
                   "train_seconds": seconds}
        run.log_metrics({f"test/{k}": v for k, v in metrics.items()})
        write_parquet(metrics_frame(seed, metrics), outputs["metrics"])


def _item_sources(histories, item_tokens: torch.Tensor) -> list[list[int]]:
    return [item_tokens[h].flatten().tolist() for h in histories]


def _evaluate(model, examples, item_tokens, trie, opts, device) -> dict[str, float]:
    ranked = generate_ranked(model, _item_sources(examples.histories, item_tokens), trie,
                             num_beams=opts["num_beams"], top_k=10, device=device)
    ranks = rank_of(ranked, item_tokens[torch.tensor(examples.targets)])
    return {f"{m}@{k}": fn(ranks, k) for k in (5, 10) for m, fn in (("recall", recall_at), ("ndcg", ndcg_at))}


def recommendation(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    seed, opts = params["seed"], params["seq2seq"]
    device = device_for(params)
    codes = load_multitokens(inputs["tokens"])
    sequences = read_parquet(inputs["sequences"])["items"].map(list).tolist()
    split = leave_one_out(sequences, params["min_length"], params["max_length"])
    vocab = _vocab(codes)
    item_tokens = vocab.encode(codes)
    trie = PrefixTrie(item_tokens)
    seed_everything(seed)
    model = _model(vocab, opts)
    hyper = {"seed": seed, "seq2seq": opts, "device": str(device), "users": split.users,
             "train_examples": len(split.train), "vocab": list(vocab.level_sizes)}
    selection = params.get("selection", "valid/ndcg@10")
    eval_every = opts.get("eval_every")
    sources = _item_sources(split.train.histories, item_tokens)
    with job_run(params, hyper) as run:
        log_epoch = epoch_logger(run, "seq2seq")
        best = {"score": -math.inf, "epoch": opts["epochs"] - 1, "state": None}

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            # Checkpoint selection on validation (App. C.2: the test numbers are the best
            # validation checkpoint's); beam search is costly, so every `eval_every` epochs.
            log_epoch(epoch, metrics)
            if not eval_every or ((epoch + 1) % eval_every and epoch + 1 != opts["epochs"]):
                return
            valid = _evaluate(model, split.valid, item_tokens, trie, opts, device)
            run.log_metrics({f"valid/{k}": v for k, v in valid.items()}, step=epoch)
            score = valid[selection.removeprefix("valid/")]
            if score > best["score"]:
                best.update(score=score, epoch=epoch,
                            state={k: v.detach().clone() for k, v in model.state_dict().items()})

        start = time.perf_counter()
        train_seq2seq(model, sources, item_tokens[torch.tensor(split.train.targets)], epochs=opts["epochs"],
                      batch_size=opts["batch_size"], lr=opts["lr"], seed=seed, device=device, on_epoch=on_epoch)
        seconds = time.perf_counter() - start
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        metrics = _evaluate(model, split.test, item_tokens, trie, opts, device)
        metrics.update({f"valid/{k}": v for k, v in _evaluate(model, split.valid, item_tokens, trie, opts, device).items()})
        metrics["best_epoch"] = best["epoch"] + 1
        metrics["train_seconds"] = seconds
        run.log_metrics({(k if k.startswith("valid/") else f"test/{k}"): v for k, v in metrics.items()})
        write_parquet(metrics_frame(seed, metrics), outputs["metrics"])


def baseline(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """A dataset's reference baselines (:mod:`hrq.baselines`), deterministic, in the per-seed
    long schema with ``seed`` 0 and a ``method`` column; rendered beside every cell of the table.

    ``params``: ``{table, min_length?, max_length?}``. Table 1: ``frequency`` (the 10 most
    frequent train hypernyms for every noun), from ``inputs['relations']``. Table 2:
    ``most_popular`` (the items most frequent in the train parts), from ``inputs['sequences']``,
    on test and (``valid/``) validation.
    """
    from hrq.baselines import frequency_baseline, most_popular

    if params["table"] == "table1":
        rel = read_parquet(inputs["relations"])
        pairs = {split: torch.tensor(rel.loc[rel["split"] == split, ["child", "parent"]].to_numpy(), dtype=torch.long)
                 for split in ("train", "test")}
        method, metrics = "frequency", frequency_baseline(pairs["train"], pairs["test"])
    else:
        sequences = read_parquet(inputs["sequences"])["items"].map(list).tolist()
        split = leave_one_out(sequences, params["min_length"], params["max_length"])
        # Each user's train part (all but the last two items) is exactly their validation input.
        train_items = torch.tensor([i for seq in split.valid.histories for i in seq], dtype=torch.long)
        method = "most_popular"
        metrics = most_popular(train_items, torch.tensor(split.test.targets))
        metrics.update(most_popular(train_items, torch.tensor(split.valid.targets), prefix="valid/"))
    write_parquet(metrics_frame(0, metrics).assign(method=method), outputs["baseline"])
