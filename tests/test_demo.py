"""The README's demo command runs end to end (tiny settings) and prints its table."""

import torch

from hrq.data import make_taxonomy
from hrq.demo import first_token_purity, main


def test_demo_prints_a_row_per_method(capsys):
    main(["--seeds", "0", "1", "--epochs", "2", "--depth", "2", "--branching", "3", "--dim", "16"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "±" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| RQ-VAE", "| HRQ-VAE (paper)", "| HRQ-VAE (gyro)"]


def test_first_token_purity_hand_computed():
    top = torch.tensor([0, 0, 1, 1, 1])
    assert first_token_purity(torch.tensor([5, 5, 6, 6, 6]), top) == 1.0
    assert first_token_purity(torch.tensor([5, 5, 5, 5, 5]), top) == 3 / 5


def test_taxonomy_is_seeded_and_hierarchical():
    a, b = make_taxonomy(3, 4, 32, seed=1), make_taxonomy(3, 4, 32, seed=1)
    assert torch.equal(a.vectors, b.vectors) and a.paths.shape == (64, 3)
    torch.testing.assert_close(a.vectors.norm(dim=-1), torch.ones(64))
    sim = a.vectors @ a.vectors.t()
    same_top = a.top_level[:, None] == a.top_level[None, :]
    off_diag = ~torch.eye(64, dtype=torch.bool)
    assert sim[same_top & off_diag].mean() > sim[~same_top].mean() + 0.2
