"""The sequential-recommendation protocol of TIGER / P5 used by the HRQ paper (App. B.2).

Per user, items in time order; users with fewer than ``min_length`` interactions are dropped;
histories are truncated to their last ``max_length`` items; leave-one-out: the last item is the
test target, the second-to-last the validation target, and every prefix of the remaining
train part predicts its next item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Examples:
    """Seq2seq examples: ``histories[i]`` (item ids, oldest first) predicts ``targets[i]``."""

    histories: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class LeaveOneOut:
    train: Examples
    valid: Examples
    test: Examples
    users: int


def filter_and_truncate(sequences: Sequence[Sequence[int]], min_length: int = 5,
                        max_length: int = 20) -> list[list[int]]:
    """Drop histories shorter than ``min_length``; keep the last ``max_length`` items of the rest."""
    if min_length < 3:
        raise ValueError(f"leave-one-out needs min_length >= 3, got {min_length}")
    return [list(seq[-max_length:]) for seq in sequences if len(seq) >= min_length]


def leave_one_out(sequences: Sequence[Sequence[int]], min_length: int = 5,
                  max_length: int = 20) -> LeaveOneOut:
    """Split user histories into train prefixes, one validation and one test example per user."""
    kept = filter_and_truncate(sequences, min_length, max_length)
    train_h, train_t, valid_h, valid_t, test_h, test_t = [], [], [], [], [], []
    for seq in kept:
        for j in range(1, len(seq) - 2):
            train_h.append(seq[:j])
            train_t.append(seq[j])
        valid_h.append(seq[:-2])
        valid_t.append(seq[-2])
        test_h.append(seq[:-1])
        test_t.append(seq[-1])
    return LeaveOneOut(Examples(train_h, train_t), Examples(valid_h, valid_t),
                       Examples(test_h, test_t), users=len(kept))
