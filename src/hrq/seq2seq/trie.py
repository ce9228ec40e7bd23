"""Prefix trie over valid multitokens, for constrained beam search.

Used as ``model.generate(..., prefix_allowed_tokens_fn=trie)`` so that decoding can only produce
multitokens that exist (e.g. the codes of known items), followed by EOS.
"""

from __future__ import annotations

from typing import Sequence

import torch

from hrq.seq2seq.vocab import EOS, PAD


class PrefixTrie:
    """The set of valid token-id sequences, indexed by every prefix.

    Args:
        sequences: ``LongTensor [M, L]`` token ids (see :class:`MultitokenVocab`) of the valid
            multitokens; duplicate rows are fine.

    The table maps each prefix tuple (length ``0 .. L-1``) to its sorted list of next tokens and is
    built once, so a lookup is one dict access (M = 100k, L = 4 builds in about a second).
    """

    def __init__(self, sequences: torch.Tensor):
        seqs = torch.as_tensor(sequences)
        if seqs.dim() != 2 or seqs.shape[1] < 1:
            raise ValueError(f"sequences must be [M, L] with L >= 1, got shape {tuple(seqs.shape)}")
        self.length = int(seqs.shape[1])
        seqs = seqs.long()
        if seqs.numel() and int(seqs.min()) <= EOS:
            raise ValueError("sequences must not contain the special ids PAD/EOS")
        rows = sorted(set(map(tuple, seqs.tolist())))
        self._complete = frozenset(rows)
        # One pass over the sorted distinct rows: a row first differs from its predecessor at
        # depth k, so it adds its token to the existing node row[:k] (in sorted order) and opens
        # new nodes row[:d] for d > k.
        nxt: dict[tuple[int, ...], list[int]] = {}
        prev: tuple[int, ...] = ()
        for row in rows:
            k = 0
            while k < len(prev) and row[k] == prev[k]:
                k += 1
            nxt.setdefault(row[:k], []).append(row[k])
            for d in range(k + 1, self.length):
                nxt[row[:d]] = [row[d]]
            nxt[row] = [EOS]
            prev = row
        self._next = nxt

    def __len__(self) -> int:
        """Number of distinct valid sequences."""
        return len(self._complete)

    def __contains__(self, sequence: object) -> bool:
        """Whether ``sequence`` (``L`` token ids, list or tensor) is a valid multitoken."""
        if isinstance(sequence, torch.Tensor):
            sequence = sequence.tolist()
        try:
            return tuple(int(t) for t in sequence) in self._complete  # type: ignore[union-attr]
        except TypeError:
            return False

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Valid next tokens after ``prefix`` (token ids, decoder start already stripped).

        Returns the next-level tokens of the valid sequences extending ``prefix``; ``[EOS]`` once
        ``prefix`` is a complete valid sequence; ``[PAD]`` for any other prefix (invalid, or
        already past EOS) so that such beams die cleanly instead of failing generation.
        The returned list must not be mutated.
        """
        if isinstance(prefix, torch.Tensor):
            prefix = prefix.tolist()
        return self._next.get(tuple(prefix), [PAD])

    def __call__(self, batch_id: int, input_ids: torch.Tensor) -> list[int]:
        """``prefix_allowed_tokens_fn`` for ``generate``: ``input_ids [t]`` is one beam's decoder
        sequence, starting with the decoder start token (PAD), which is stripped."""
        return self._next.get(tuple(input_ids.tolist()[1:]), [PAD])
