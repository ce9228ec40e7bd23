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


# --------------------------------------------------------------------------- hierarchy (Table 1 path)
@dataclass(frozen=True)
class SyntheticHierarchy:
    """All nodes of a complete tree (root included), for hypernym generation.

    Attributes:
        names: node names, the root is ``"entity"`` and a node at path ``(2, 0)`` is ``"n.2.0"``.
        parent: ``LongTensor [n_nodes]``, the parent's node id, ``-1`` for the root.
        depth: ``LongTensor [n_nodes]``, 0 for the root.
        top_level: ``LongTensor [n_nodes]``, the top-level subtree, ``-1`` for the root.
    """

    names: list[str]
    parent: torch.Tensor
    depth: torch.Tensor
    top_level: torch.Tensor


def make_hierarchy(depth: int = 4, branching: int = 4) -> SyntheticHierarchy:
    """The complete ``branching``-ary tree of ``depth`` levels below a root, breadth-first ids."""
    if depth < 1 or branching < 2:
        raise ValueError(f"need depth >= 1 and branching >= 2, got depth={depth}, branching={branching}")
    names, parent, depths, top = ["entity"], [-1], [0], [-1]
    frontier = [(0, ())]
    for level in range(1, depth + 1):
        nxt = []
        for node, path in frontier:
            for child in range(branching):
                p = path + (child,)
                nxt.append((len(names), p))
                names.append("n." + ".".join(map(str, p)))
                parent.append(node)
                depths.append(level)
                top.append(p[0])
        frontier = nxt
    return SyntheticHierarchy(names, torch.tensor(parent), torch.tensor(depths), torch.tensor(top))


def transitive_closure(parent: torch.Tensor) -> torch.Tensor:
    """Every (node, ancestor) pair of a forest given by its parent array (``-1`` = no parent).

    Returns:
        ``LongTensor [n_pairs, 2]`` of (hyponym, hypernym) ids, sorted.
    """
    pairs = []
    node = torch.arange(parent.numel())
    anc = parent.clone()
    seen = 0
    while bool((anc >= 0).any()):
        keep = anc >= 0
        node, anc = node[keep], anc[keep]
        pairs.append(torch.stack([node, anc], dim=-1))
        anc = parent[anc]
        seen += 1
        if seen > parent.numel():
            raise ValueError("parent array has a cycle")
    if not pairs:
        return torch.zeros(0, 2, dtype=torch.long)
    out = torch.cat(pairs)
    return out[torch.argsort(out[:, 0] * parent.numel() + out[:, 1])]


# --------------------------------------------------------------------------- catalog (Table 2 path)
@dataclass(frozen=True)
class SyntheticCatalog:
    """Items = leaves of a :class:`SyntheticTaxonomy`, with text and user histories.

    Attributes:
        taxonomy: the leaves' paths and ground-truth embeddings.
        titles: one title per item, built from its tree path.
        texts: one description per item (what a text encoder would embed).
        sequences: per user, the item ids in time order.
    """

    taxonomy: SyntheticTaxonomy
    titles: list[str]
    texts: list[str]
    sequences: list[list[int]]


def make_catalog(
    depth: int = 3,
    branching: int = 6,
    dim: int = 64,
    *,
    leaves_per_node: int = 2,
    users: int = 600,
    min_length: int = 5,
    max_length: int = 20,
    stay_probability: float = 0.85,
    seed: int = 0,
) -> SyntheticCatalog:
    """Build a catalog whose users mostly stay inside one second-level subtree.

    Each user starts at a random item; each next item is, with ``stay_probability``, a random
    item of the current item's second-level subtree (its first two path entries), otherwise a
    random item of the catalog. History lengths are uniform in ``[min_length, 2*max_length]``,
    so the protocol's truncation to the last ``max_length`` items matters.
    """
    taxonomy = make_taxonomy(depth, branching, dim, leaves_per_node=leaves_per_node, seed=seed)
    paths = taxonomy.paths
    n = paths.shape[0]
    titles, texts = [], []
    for i, path in enumerate(paths.tolist()):
        cats = [".".join(map(str, path[: j + 1])) for j in range(len(path))]
        titles.append(f"item {i}")
        texts.append(f"item {i} in category " + " > ".join(f"c{c}" for c in cats))
    g = torch.Generator().manual_seed(seed + 1)
    group = paths[:, 0] * branching + paths[:, 1] if depth > 1 else paths[:, 0]
    members = [torch.nonzero(group == gid).squeeze(-1) for gid in range(int(group.max()) + 1)]
    sequences = []
    for _ in range(users):
        length = int(torch.randint(min_length, 2 * max_length + 1, (1,), generator=g))
        item = int(torch.randint(n, (1,), generator=g))
        seq = [item]
        for _ in range(length - 1):
            if float(torch.rand((), generator=g)) < stay_probability:
                pool = members[int(group[item])]
                item = int(pool[torch.randint(pool.numel(), (1,), generator=g)])
            else:
                item = int(torch.randint(n, (1,), generator=g))
            seq.append(item)
        sequences.append(seq)
    return SyntheticCatalog(taxonomy, titles, texts, sequences)
