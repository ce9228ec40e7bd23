"""Downstream multitoken seq2seq (HRQ paper §4.2-4.3, App. C.1-C.2).

A small T5 maps a source token sequence to a target multitoken, decoded by beam search constrained
to a :class:`PrefixTrie` of valid multitokens, or free (a beam that names nothing is a miss).
Shared by hypernym generation (source = a noun's multitoken, target = its hypernym's; Recall@10)
and TIGER-style generative recommendation (source = a user's history of item multitokens,
target = the next item's; Recall/NDCG@5,10).
"""

from hrq.seq2seq.metrics import invalid_at, ndcg_at, rank_of, recall_at
from hrq.seq2seq.model import Seq2SeqConfig, build_model, pick_device
from hrq.seq2seq.train import DECODINGS, SCHEDULES, generate_ranked, lr_factor, pad_sources, train_seq2seq
from hrq.seq2seq.trie import PrefixTrie
from hrq.seq2seq.vocab import EOS, PAD, MultitokenVocab

__all__ = [
    "DECODINGS",
    "EOS",
    "PAD",
    "MultitokenVocab",
    "PrefixTrie",
    "SCHEDULES",
    "Seq2SeqConfig",
    "build_model",
    "generate_ranked",
    "invalid_at",
    "lr_factor",
    "ndcg_at",
    "pad_sources",
    "pick_device",
    "rank_of",
    "recall_at",
    "train_seq2seq",
]
