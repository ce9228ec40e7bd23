"""Downstream stages: one seed's seq2seq on fixed multitokens, evaluated on held-out data.

* hypernym generation (Table 1): source = a noun's multitoken, target = one of its
  hypernyms' multitokens; trained on the train relations. For each test noun the model
  returns its 10 best multitokens by beam search constrained to existing nouns' multitokens
  (``seq2seq.decoding: constrained``) or free (``free``: a returned multitoken that is no
  noun's is a miss and keeps its slot); a test relation (u, v) is a hit when v's whole
  multitoken is among u's 10 ("recall@10", the mean over test relations). ``invalid@10``: the
  share of the 10 returned slots per test noun that name no noun.
* recommendation (Table 2): source = the concatenated multitokens of a user's history
  (≤ max_length items), target = the next item's multitoken; leave-one-out, with histories
  truncated before the split or only as model inputs (``truncation``, see
  :mod:`hrq.recsys.protocol`). Decoding as above; ``invalid@10`` per user. A hit needs the
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
import pandas as pd
import torch

from hrq.baselines import derivable_mask, nonfrequent_mask
from hrq.io import read_parquet, write_parquet
from hrq.recsys import leave_one_out
from hrq.seq2seq import (
    MultitokenVocab,
    PrefixTrie,
    Seq2SeqConfig,
    build_model,
    generate_ranked,
    invalid_at,
    ndcg_at,
    rank_of,
    recall_at,
    train_seq2seq,
)
from hrq.stages.common import device_for, epoch_logger, job_run, metrics_frame, seed_everything

MODEL_KEYS = ("d_model", "d_ff", "num_layers", "num_heads", "d_kv", "dropout")


def _schedule(opts: Mapping[str, Any]) -> dict[str, Any]:
    """``train_seq2seq``'s lr schedule from a seq2seq section (constant when not given)."""
    return {"schedule": opts.get("schedule", "constant"), "warmup_steps": opts.get("warmup_steps", 0)}


def _decoding(opts: Mapping[str, Any]) -> str:
    """``seq2seq.decoding``: ``constrained`` (prefix trie, the default) or ``free``."""
    return opts.get("decoding", "constrained")


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
    with job_run(params, hyper, datasets=inputs) as run:
        start = time.perf_counter()
        train_seq2seq(model, src, tgt, epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                      seed=seed, device=device, on_epoch=epoch_logger(run, "seq2seq", opts["epochs"]),
                      **_schedule(opts))
        seconds = time.perf_counter() - start
        nouns, inverse = np.unique(test["child"].to_numpy(), return_inverse=True)
        ranked = generate_ranked(model, tokens[torch.from_numpy(nouns)], PrefixTrie(tokens),
                                 num_beams=opts["num_beams"], top_k=10, device=device, decoding=_decoding(opts))
        ranks = rank_of(ranked[torch.from_numpy(inverse)], tokens[torch.tensor(test["parent"].to_numpy())])
        # Recall on the test pairs a baseline cannot score: hypernyms not among the 10 most
        # frequent train hypernyms (frequency), and hypernyms not reachable from the noun
        # through train relations (composition: u→w and w→v in train give u→v).
        train_pairs, test_pairs = (torch.tensor(df[["child", "parent"]].to_numpy()) for df in (train, test))
        rare = nonfrequent_mask(train_pairs[:, 1], test_pairs[:, 1])
        fresh = ~derivable_mask(train_pairs, test_pairs)
        metrics = {"recall@10": recall_at(ranks, 10), "recall@1": recall_at(ranks, 1),
                   "recall@10_nonfrequent": recall_at(ranks[rare], 10) if bool(rare.any()) else math.nan,
                   "recall@10_nonderivable": recall_at(ranks[fresh], 10) if bool(fresh.any()) else math.nan,
                   # share of the 10 returned multitokens per test noun that name no noun
                   "invalid@10": invalid_at(ranked, 10), "train_seconds": seconds}
        run.log_metrics({f"test/{k}": v for k, v in metrics.items()})
        write_parquet(metrics_frame(seed, metrics), outputs["metrics"])


def _item_sources(histories, item_tokens: torch.Tensor) -> list[list[int]]:
    return [item_tokens[h].flatten().tolist() for h in histories]


def _evaluate(model, examples, item_tokens, trie, opts, device) -> dict[str, float]:
    ranked = generate_ranked(model, _item_sources(examples.histories, item_tokens), trie,
                             num_beams=opts["num_beams"], top_k=10, device=device, decoding=_decoding(opts))
    ranks = rank_of(ranked, item_tokens[torch.tensor(examples.targets)])
    metrics = {f"{m}@{k}": fn(ranks, k) for k in (5, 10) for m, fn in (("recall", recall_at), ("ndcg", ndcg_at))}
    metrics["invalid@10"] = invalid_at(ranked, 10)  # returned multitokens that name no item
    return metrics


def recommendation(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    seed, opts = params["seed"], params["seq2seq"]
    device = device_for(params)
    codes = load_multitokens(inputs["tokens"])
    sequences = read_parquet(inputs["sequences"])["items"].map(list).tolist()
    split = leave_one_out(sequences, params["min_length"], params["max_length"],
                          params.get("truncation", "before_split"))
    vocab = _vocab(codes)
    item_tokens = vocab.encode(codes)
    trie = PrefixTrie(item_tokens)
    seed_everything(seed)
    model = _model(vocab, opts)
    hyper = {"seed": seed, "seq2seq": opts, "device": str(device), "users": split.users,
             "truncation": params.get("truncation", "before_split"),
             "train_examples": len(split.train), "vocab": list(vocab.level_sizes)}
    selection = params.get("selection", "valid/ndcg@10")
    eval_every = opts.get("eval_every")
    sources = _item_sources(split.train.histories, item_tokens)
    with job_run(params, hyper, datasets=inputs) as run:
        log_epoch = epoch_logger(run, "seq2seq", opts["epochs"])
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
                      batch_size=opts["batch_size"], lr=opts["lr"], seed=seed, device=device, on_epoch=on_epoch,
                      **_schedule(opts))
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

    ``params``: ``{table, min_length?, max_length?}``. Table 1, from ``inputs['relations']``:
    ``frequency`` (the 10 most frequent train hypernyms for every noun; with the dataset's
    ``test_pairs`` and ``test_share``, the split's size) and ``composition`` (the hypernyms
    reachable through train relations, most frequent first; with ``nonderivable_share``). Table 2:
    ``most_popular`` (the items most frequent in the train parts), from ``inputs['sequences']``,
    on test and (``valid/``) validation.
    """
    from hrq.baselines import composition_baseline, frequency_baseline, most_popular

    if params["table"] == "table1":
        rel = read_parquet(inputs["relations"])
        pairs = {split: torch.tensor(rel.loc[rel["split"] == split, ["child", "parent"]].to_numpy(), dtype=torch.long)
                 for split in ("train", "test")}
        size = {"test_pairs": len(pairs["test"]), "test_share": len(pairs["test"]) / max(len(rel), 1)}
        methods = {"frequency": {**frequency_baseline(pairs["train"], pairs["test"]), **size},
                   "composition": composition_baseline(pairs["train"], pairs["test"])}
    else:
        sequences = read_parquet(inputs["sequences"])["items"].map(list).tolist()
        # The recommender's protocol (recommendation.truncation included): the train parts are
        # each user's history but its last two items, after any truncation before the split.
        split = leave_one_out(sequences, params["min_length"], params["max_length"],
                              params.get("truncation", "before_split"))
        train_items = torch.tensor([i for seq in split.train_parts for i in seq], dtype=torch.long)
        metrics = most_popular(train_items, torch.tensor(split.test.targets))
        metrics.update(most_popular(train_items, torch.tensor(split.valid.targets), prefix="valid/"))
        methods = {"most_popular": metrics}
    write_parquet(pd.concat([metrics_frame(0, m).assign(method=name) for name, m in methods.items()],
                            ignore_index=True), outputs["baseline"])
