"""k-means in Euclidean space or on the Poincaré ball, for data-dependent codebook init.

Poincaré k-means assigns points by hyperbolic distance and moves each centroid to the Einstein
midpoint of its points (geoopt's ``weighted_midpoint``), the standard closed-form stand-in for
the Fréchet mean on the ball.
"""

from __future__ import annotations

import geoopt
import torch

from hrq.manifold import poincare_ball
from hrq.quantize.distance import nearest

# Elements of the [chunk, N, h] broadcast in geoopt's weighted_midpoint per call (~64 MiB f32).
_MIDPOINT_CHUNK_ELEMENTS = 1 << 24


def _initial_centroids(x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    if n >= k:
        idx = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    else:  # fewer points than codewords: reuse points; duplicates are split by the caller's data
        idx = torch.randint(n, (k,), generator=generator, device="cpu").to(x.device)
    return x[idx].clone()


def _poincare_centroids(
    x: torch.Tensor, assign: torch.Tensor, old: torch.Tensor, ball: geoopt.PoincareBall
) -> torch.Tensor:
    k, (n, h) = old.shape[0], x.shape
    onehot = torch.zeros(k, n, dtype=x.dtype, device=x.device)
    onehot[assign, torch.arange(n, device=x.device)] = 1.0
    chunk = max(1, _MIDPOINT_CHUNK_ELEMENTS // max(1, n * h))
    means = []
    for start in range(0, k, chunk):
        w = onehot[start : start + chunk]  # [c, N]
        means.append(ball.weighted_midpoint(x.unsqueeze(0), w, reducedim=[1], dim=-1))
    new = torch.cat(means).reshape(k, h)
    return ball.projx(new)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    iters: int = 10,
    curvature: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cluster ``x [N, h]`` into ``k`` centroids ``[k, h]``.

    Args:
        x: points (on the ball of curvature ``curvature`` when given).
        k: number of centroids.
        iters: Lloyd iterations.
        curvature: ``None`` for Euclidean k-means, else ``c > 0`` for Poincaré k-means.
        generator: CPU generator for the initial sample (reproducible init).

    Empty clusters keep their previous centroid.
    """
    x = x.detach()
    ball = poincare_ball(curvature) if curvature is not None else None
    centroids = _initial_centroids(x, k, generator)
    for _ in range(iters):
        assign = nearest(x, centroids, curvature)
        counts = torch.bincount(assign, minlength=k)
        nonempty = counts > 0
        if ball is None:
            sums = torch.zeros_like(centroids).index_add_(0, assign, x)
            new = sums / counts.clamp_min(1).unsqueeze(-1).to(x.dtype)
        else:
            new = _poincare_centroids(x, assign, centroids, ball)
        centroids = torch.where(nonempty.unsqueeze(-1), new, centroids)
    return centroids
