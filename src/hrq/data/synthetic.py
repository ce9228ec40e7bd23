"""A synthetic taxonomy with known ground truth, for demos and tests that need a hierarchy.

A complete tree of given depth and branching; every node gets a random offset whose scale
shrinks with depth, and a leaf's vector is the sum of the offsets on its root path plus noise,
normalised to the unit sphere (like MPNet sentence embeddings). Leaves in the same subtree are
therefore close, and the top-level subtree is the coarsest cluster a tokenizer should find.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SyntheticTaxonomy:
    """Leaves of a random tree with their embeddings.

    Attributes:
        paths: ``LongTensor [n_leaves, depth]``, the child index taken at each level (the
            first column is the top-level subtree).
        vectors: ``[n_leaves, dim]`` unit-norm leaf embeddings.
    """

    paths: torch.Tensor
    vectors: torch.Tensor

    @property
    def top_level(self) -> torch.Tensor:
        """Top-level subtree of each leaf, ``LongTensor [n_leaves]``."""
        return self.paths[:, 0]


def make_taxonomy(
    depth: int = 3,
    branching: int = 4,
    dim: int = 64,
    *,
    decay: float = 0.5,
    noise: float = 0.05,
    leaves_per_node: int = 1,
    seed: int = 0,
) -> SyntheticTaxonomy:
    """Build a :class:`SyntheticTaxonomy` of ``branching**depth * leaves_per_node`` leaves.

    Args:
        depth: tree depth (levels below the root).
        branching: children per internal node.
        dim: embedding dimension.
        decay: offset scale at level ``l`` is ``decay**l``.
        noise: std of the per-leaf Gaussian noise.
        leaves_per_node: samples drawn around each deepest node.
        seed: the generator seed; same seed, same taxonomy.
    """
    if depth < 1 or branching < 2:
        raise ValueError(f"need depth >= 1 and branching >= 2, got depth={depth}, branching={branching}")
    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.arange(branching)] * depth, indexing="ij")
    paths = torch.stack([m.reshape(-1) for m in grids], dim=-1).repeat_interleave(leaves_per_node, 0)
    vectors = torch.zeros(paths.shape[0], dim)
    node_id = torch.zeros(paths.shape[0], dtype=torch.long)
    for level in range(depth):
        node_id = node_id * branching + paths[:, level]
        offsets = torch.randn(branching ** (level + 1), dim, generator=g) * decay**level
        vectors += offsets[node_id] / dim**0.5
    vectors += noise * torch.randn(vectors.shape, generator=g) / dim**0.5
    return SyntheticTaxonomy(paths, torch.nn.functional.normalize(vectors, dim=-1))
