"""The downstream encoder-decoder: a small T5 built from a config (no pretrained weights).

Defaults follow the HRQ paper App. C.1 (hypernym generation); the generative recommender of
App. C.2 uses ``Seq2SeqConfig(d_model=384, num_heads=6, d_kv=64, d_ff=1024)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from hrq.device import pick_device  # noqa: F401  (re-exported)
from hrq.seq2seq.vocab import EOS, PAD


@dataclass
class Seq2SeqConfig:
    """Size of the T5 encoder-decoder.

    Attributes:
        d_model: hidden size.
        d_ff: feed-forward width (ReLU).
        num_layers: encoder blocks.
        num_decoder_layers: decoder blocks.
        num_heads: attention heads.
        d_kv: size of each head's keys / values.
        dropout: dropout rate.
        tie_embeddings: share input embeddings and the output projection.
    """

    d_model: int = 256
    d_ff: int = 1024
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 8
    d_kv: int = 32
    dropout: float = 0.1
    tie_embeddings: bool = True


def build_model(vocab_size: int, config: Seq2SeqConfig) -> T5ForConditionalGeneration:
    """A randomly initialised ``T5ForConditionalGeneration`` over ``vocab_size`` token ids.

    PAD = 0 (also the decoder start token), EOS = 1, ReLU feed-forward; see
    :class:`hrq.seq2seq.MultitokenVocab` for the id layout (``vocab_size = vocab.size``).
    Seed torch beforehand for reproducible weights.

    ``tie_embeddings=True`` is the original T5: the output projection is the shared embedding
    and decoder outputs are scaled by ``d_model ** -0.5``. ``False`` (T5 v1.1 style) gives the
    output projection its own weights and no scaling. Encoder and decoder always share the
    input embedding. Note: transformers 5 forces ``T5Config.tie_word_embeddings = True`` and only
    uses the flag to switch the scaling, so the untying is done here, on the model instance; an
    untied model should be saved / restored through its ``state_dict`` (``from_pretrained``
    would tie the head again).
    """
    if vocab_size <= EOS + 1:
        raise ValueError(f"vocab_size must exceed the 2 special ids, got {vocab_size}")
    t5 = T5Config(
        vocab_size=vocab_size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_decoder_layers=config.num_decoder_layers,
        num_heads=config.num_heads,
        dropout_rate=config.dropout,
        feed_forward_proj="relu",
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        tie_word_embeddings=config.tie_embeddings,
        is_encoder_decoder=True,
    )
    model = T5ForConditionalGeneration(t5)
    if not config.tie_embeddings:
        _untie_lm_head(model)
    gen = model.generation_config
    gen.pad_token_id, gen.eos_token_id, gen.decoder_start_token_id = PAD, EOS, PAD
    return model


def _untie_lm_head(model: T5ForConditionalGeneration) -> None:
    """Give ``lm_head`` its own freshly initialised weight and drop it from the tying maps."""
    shared = model.shared.weight
    head = torch.empty_like(shared.detach()).normal_(0.0, model.config.initializer_factor)
    model.lm_head.weight = nn.Parameter(head)
    # instance-level override: later tie_weights() calls must not re-tie the head
    model._tied_weights_keys = {k: v for k, v in type(model)._tied_weights_keys.items() if k != "lm_head.weight"}
    model.all_tied_weights_keys = {
        k: v for k, v in getattr(model, "all_tied_weights_keys", {}).items() if k != "lm_head.weight"
    }


