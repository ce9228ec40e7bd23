"""Token ids for multitokens: one id range per level, plus the PAD / EOS specials.

A multitoken is a fixed-length sequence of ``L`` codes, the code at level ``l`` lying in
``[0, level_sizes[l])``. The seq2seq model sees the code ``c`` at level ``l`` as the token id
``2 + offsets[l] + c`` (``offsets`` = cumulative level sizes), so every level has its own ids and
the model knows which position a token belongs to.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Sequence

import torch

PAD = 0
"""Padding id; also T5's decoder start token."""
EOS = 1
"""End-of-sequence id, appended after the ``L`` code tokens of a target."""
NUM_SPECIAL = 2


class MultitokenVocab:
    """Maps multitoken codes ``[N, L]`` to model token ids ``[N, L]`` and back.

    Args:
        level_sizes: codebook size of each of the ``L`` levels (all positive).

    Attributes:
        level_sizes: ``tuple[int, ...]`` of length ``L``.
        length: ``L``, tokens per multitoken.
        offsets: ``tuple[int, ...]``, ``offsets[l] = sum(level_sizes[:l])``.
        size: total vocabulary size, specials included (``2 + sum(level_sizes)``).
    """

    PAD = PAD
    EOS = EOS

    def __init__(self, level_sizes: Sequence[int]):
        sizes = tuple(int(s) for s in level_sizes)
        if not sizes:
            raise ValueError("level_sizes must name at least one level")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"level sizes must be positive, got {sizes}")
        self.level_sizes = sizes
        self.length = len(sizes)
        self.offsets = (0, *accumulate(sizes))[:-1]
        self.size = NUM_SPECIAL + sum(sizes)

    def __repr__(self) -> str:
        return f"MultitokenVocab(level_sizes={list(self.level_sizes)})"

    def _check_shape(self, x: torch.Tensor, what: str) -> None:
        if x.dim() < 1 or x.shape[-1] != self.length:
            raise ValueError(f"{what} must have shape [..., {self.length}], got {tuple(x.shape)}")

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        """``[L]`` first token id of each level, on ``x``'s device."""
        return torch.tensor(self.offsets, dtype=torch.long, device=x.device) + NUM_SPECIAL

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``LongTensor [N, L]`` (any leading dims) -> token ids of the same shape.

        Raises:
            ValueError: on a wrong last dimension, or a code outside ``[0, level_sizes[l])``
                (the message names the level and the bad value).
        """
        codes = torch.as_tensor(codes)
        self._check_shape(codes, "codes")
        codes = codes.long()
        for level, size in enumerate(self.level_sizes):
            col = codes[..., level]
            bad = (col < 0) | (col >= size)
            if bool(bad.any()):
                value = int(col[bad].flatten()[0])
                raise ValueError(f"code {value} at level {level} is outside [0, {size})")
        return codes + self._base(codes)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids ``LongTensor [N, L]`` (any leading dims) -> codes of the same shape.

        Entries equal to ``-1`` (the empty rows of :func:`hrq.seq2seq.generate_ranked`) stay ``-1``.

        Raises:
            ValueError: on a wrong last dimension, or a token that is not an id of its level.
        """
        tokens = torch.as_tensor(tokens)
        self._check_shape(tokens, "tokens")
        tokens = tokens.long()
        codes = tokens - self._base(tokens)
        for level, size in enumerate(self.level_sizes):
            col, tok = codes[..., level], tokens[..., level]
            bad = ((col < 0) | (col >= size)) & (tok != -1)
            if bool(bad.any()):
                value = int(tok[bad].flatten()[0])
                lo = NUM_SPECIAL + self.offsets[level]
                raise ValueError(f"token {value} at level {level} is not a level-{level} id "
                                 f"(expected [{lo}, {lo + size}) or -1)")
        return torch.where(tokens == -1, tokens, codes)
