"""Codebook statistics and multitoken helpers on hand-computed examples."""

import math

import pytest
import torch

from hrq.quantize import append_dedup_token, codebook_stats, perplexity, random_codes


def test_codebook_stats_hand_computed():
    codes = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 3]])
    s = codebook_stats(codes, [4, 8])
    assert s.usage == (2 / 4, 3 / 8)
    p0 = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    p1 = math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert s.perplexity == pytest.approx((p0, p1))
    assert s.collision_rate == pytest.approx(1 - 3 / 4)
    assert s.largest_collision_group == 2
    d = s.as_dict("tok/")
    assert d["tok/usage/l1"] == 3 / 8 and d["tok/collision_rate"] == 0.25


def test_perplexity_bounds():
    assert perplexity(torch.zeros(10, dtype=torch.long), 5) == pytest.approx(1.0)
    assert perplexity(torch.arange(5).repeat(3), 5) == pytest.approx(5.0)


def test_append_dedup_token_indexes_within_collision_group_in_row_order():
    codes = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [1, 2], [3, 4]])
    out = append_dedup_token(codes)
    assert out[:, :2].tolist() == codes.tolist()
    assert out[:, 2].tolist() == [0, 0, 1, 0, 2, 1]
    assert torch.unique(out, dim=0).shape[0] == codes.shape[0]


def test_append_dedup_token_is_zero_when_unique_and_handles_empty():
    codes = torch.tensor([[0, 1], [1, 0], [1, 1]])
    assert append_dedup_token(codes)[:, -1].tolist() == [0, 0, 0]
    assert append_dedup_token(codes[:0]).shape == (0, 3)


def test_append_dedup_token_large_random_is_unique():
    codes = torch.randint(4, (5000, 3))  # 64 possible multitokens: heavy collisions
    out = append_dedup_token(codes)
    assert torch.unique(out, dim=0).shape[0] == 5000
    _, counts = torch.unique(codes, dim=0, return_counts=True)
    assert out[:, -1].max() == counts.max() - 1


def test_random_codes_baseline():
    g = torch.Generator().manual_seed(0)
    out = random_codes(1000, [4, 8, 16], generator=g)
    assert out.shape == (1000, 4)
    assert (out[:, :3].max(0).values < torch.tensor([4, 8, 16])).all()
    assert torch.unique(out, dim=0).shape[0] == 1000
    again = random_codes(1000, [4, 8, 16], generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match="levels"):
        random_codes(10, 4)
