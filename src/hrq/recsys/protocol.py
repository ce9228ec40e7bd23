"""The sequential-recommendation protocol of TIGER / P5 used by the HRQ paper (App. B.2).

Per user, items in time order; users with fewer than ``min_length`` interactions are dropped;
histories are limited to ``max_length`` items; leave-one-out: the last item is the test target,
the second-to-last the validation target, and every prefix of the remaining train part predicts
its next item.

Where the limit applies is a choice (``truncation``), because App. B.2 reads "we cut the histories
shorter than 5 elements and limit the length of user histories to 20", then splits:

* ``"before_split"`` (the paper's literal order, the default): each history is cut to its last
  ``max_length`` items, then split. Test inputs hold at most ``max_length - 1`` items,
  validation inputs ``max_length - 2``, and the items before the last ``max_length`` are never
  seen (neither as input nor as target).
* ``"input_only"``: the whole history is split; only each model input keeps its last
  ``max_length`` items. Every interaction of the train part is a training target, and test
  inputs hold up to ``max_length`` items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

TRUNCATIONS = ("before_split", "input_only")


@dataclass(frozen=True)
class Examples:
    """Seq2seq examples: ``histories[i]`` (item ids, oldest first) predicts ``targets[i]``."""

    histories: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class LeaveOneOut:
    """The three example sets, the number of users kept, and ``train_parts``: each kept user's
    train part (all but the last two items of the history the split saw), the interactions a
    train-only baseline such as most-popular may count."""

    train: Examples
    valid: Examples
    test: Examples
    users: int
    train_parts: list[list[int]] = field(default_factory=list)


def filter_and_truncate(sequences: Sequence[Sequence[int]], min_length: int = 5,
                        max_length: int = 20) -> list[list[int]]:
    """Drop histories shorter than ``min_length``; keep the last ``max_length`` items of the rest."""
    if min_length < 3:
        raise ValueError(f"leave-one-out needs min_length >= 3, got {min_length}")
    return [list(seq[-max_length:]) for seq in sequences if len(seq) >= min_length]


def leave_one_out(sequences: Sequence[Sequence[int]], min_length: int = 5,
                  max_length: int = 20, truncation: str = "before_split") -> LeaveOneOut:
    """Split user histories into train prefixes, one validation and one test example per user.

    ``truncation``: ``"before_split"`` or ``"input_only"`` (module docstring). Users are
    filtered by their full length in both.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if truncation == "before_split":
        kept = filter_and_truncate(sequences, min_length, max_length)
        start = lambda j: 0  # noqa: E731  (the history is already short enough)
    else:
        kept = [list(seq) for seq in filter_and_truncate(sequences, min_length, max(map(len, sequences), default=1))]
        start = lambda j: max(0, j - max_length)  # noqa: E731  (the input before item j: its last max_length)
    train_h, train_t, valid_h, valid_t, test_h, test_t = [], [], [], [], [], []
    for seq in kept:
        for j in range(1, len(seq) - 2):
            train_h.append(seq[start(j):j])
            train_t.append(seq[j])
        valid_h.append(seq[start(len(seq) - 2):-2])
        valid_t.append(seq[-2])
        test_h.append(seq[start(len(seq) - 1):-1])
        test_t.append(seq[-1])
    return LeaveOneOut(Examples(train_h, train_t), Examples(valid_h, valid_t),
                       Examples(test_h, test_t), users=len(kept),
                       train_parts=[seq[:-2] for seq in kept])
