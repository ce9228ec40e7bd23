"""k-means in Euclidean space or on the Poincaré ball, for data-dependent codebook init.

Seeding is k-means++ (Arthur & Vassilvitskii, 2007) in the same geometry: each new centroid is
a data point drawn with probability proportional to its squared distance (hyperbolic on the
ball) to the nearest centroid so far. A uniform sample of points would put several centroids
on duplicates, e.g. on the many zero residuals of points that were themselves centroids of
the level before, and such centroids stay empty (dead codewords) through Lloyd's iterations.

Poincaré k-means assigns points by hyperbolic distance and moves each centroid to the Einstein
midpoint of its points (geoopt's ``weighted_midpoint``, computed by scatter-adds), the standard
closed-form stand-in for the Fréchet mean on the ball.
"""

from __future__ import annotations

import geoopt
import torch

from hrq.checks import require_finite
from hrq.manifold import poincare_ball
from hrq.quantize.distance import nearest


def _squared_distance(x: torch.Tensor, c: torch.Tensor, ball: geoopt.PoincareBall | None) -> torch.Tensor:
    """Squared distance ``[N]`` of points ``x [N, h]`` to one point ``c [h]`` in the geometry."""
    if ball is None:
        return (x - c).pow(2).sum(-1)
    return ball.dist(x, c.expand_as(x)).pow(2)


def _initial_centroids(
    x: torch.Tensor, k: int, ball: geoopt.PoincareBall | None, generator: torch.Generator | None
) -> torch.Tensor:
    """k-means++ seeds ``[k, h]`` from ``x [N, h]``.

    The ``k`` uniform draws come from ``generator`` on the CPU (so the seeds are the same on
    every device) and pick a point by inverse-CDF search on the cumulative squared distances;
    no step reads a value back to the host. Once every point coincides with a seed (fewer
    distinct points than ``k``) the remaining draws are uniform over the points, i.e. repeats.
    """
    n = x.shape[0]
    u = torch.rand(k, generator=generator, dtype=torch.float64).to(x.device)
    first = (u[0] * n).long().clamp_max(n - 1)
    idx = [first]
    d2 = _squared_distance(x, x[first], ball).double()
    for i in range(1, k):
        total = d2.sum()
        weights = torch.where(total > 0, d2, torch.ones_like(d2))
        cum = weights.cumsum(0)
        # side="right": the first point whose cumulative weight exceeds the draw, never a
        # zero-weight point (one that is already a seed)
        j = torch.searchsorted(cum, (u[i] * cum[-1]).unsqueeze(0), right=True).clamp_max(n - 1)[0]
        idx.append(j)
        d2 = torch.minimum(d2, _squared_distance(x, x[j], ball).double())
    return x[torch.stack(idx)].clone()


def _poincare_centroids(
    x: torch.Tensor, assign: torch.Tensor, old: torch.Tensor, ball: geoopt.PoincareBall
) -> torch.Tensor:
    """Einstein midpoints ``[k, h]`` of the clusters of ``x [N, h]`` (``assign [N]``).

    geoopt's ``weighted_midpoint`` with one-hot weights is
    ``(1/2) ⊗ (Σ_i λ_i x_i / Σ_i (λ_i - 1))`` over a cluster's points; the two sums are
    scatter-adds here, where ``weighted_midpoint`` would broadcast ``[k, N, h]``.
    Empty clusters come out at the origin (the caller keeps their old centroid).
    """
    lam = ball.lambda_x(x, keepdim=True)  # [N, 1]
    num = torch.zeros_like(old).index_add_(0, assign, lam * x)
    den = torch.zeros(old.shape[0], 1, dtype=x.dtype, device=x.device).index_add_(0, assign, lam - 1)
    half = torch.tensor(0.5, dtype=x.dtype, device=x.device)
    return ball.projx(ball.mobius_scalar_mul(half, num / den.clamp_min(1e-10)))


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
        iters: Lloyd iterations after the k-means++ seeding.
        curvature: ``None`` for Euclidean k-means, else ``c > 0`` for Poincaré k-means.
        generator: CPU generator for the seeding draws (reproducible init); ``None`` uses
            torch's global generator.

    With ``N >= k`` distinct points every seed is a distinct point. Empty clusters keep their
    previous centroid.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected points [N, h] with N >= 1, got {tuple(x.shape)}")
    x = x.detach()
    # One NaN point makes every centroid NaN through the distances (once per init: one sync).
    require_finite(x, "k-means sample")
    ball = poincare_ball(curvature) if curvature is not None else None
    centroids = _initial_centroids(x, k, ball, generator)
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
