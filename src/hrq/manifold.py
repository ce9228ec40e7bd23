"""The one place hrq builds its Poincaré ball."""

from __future__ import annotations

import geoopt
import torch
from torch.autograd.function import once_differentiable


def poincare_ball(curvature: float) -> geoopt.PoincareBall:
    """geoopt's Poincaré ball ``{x : c||x||^2 < 1}`` with exactly the curvature asked for.

    geoopt stores the curvature through a softplus of a float32 tensor when given a Python float
    (``c=0.1`` becomes ``0.10000005``, a 5e-7 relative error that float64 checks see); a float64
    tensor keeps it exact. Operations still run in the dtype of their inputs.
    """
    if not curvature > 0:
        raise ValueError(f"curvature must be > 0, got {curvature}")
    return geoopt.PoincareBall(c=torch.tensor(float(curvature), dtype=torch.float64))


# geoopt's projection margin per dtype (geoopt.manifolds.stereographic.math._project).
BALL_EPS = {torch.float32: 4e-3, torch.float64: 1e-5}


def _projection_scale(x: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Row norms ``[N, 1]`` of ``x`` and the factor ``min(1, max_norm / ||x||)`` that moves rows
    beyond geoopt's radius ``(1 - eps)/sqrt(c)`` onto it."""
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    max_norm = (1 - BALL_EPS.get(x.dtype, 4e-3)) / c**0.5
    return norm, (max_norm / norm).clamp_max(1.0)


def project(x: torch.Tensor, curvature: float) -> torch.Tensor:
    """geoopt's ``projx``: rescale rows with ``||x|| > (1 - eps)/sqrt(c)`` onto that radius
    (eps 4e-3 in float32, 1e-5 in float64), written as a clamped scale factor: the same values
    and gradients in a third of the kernels, without the float64 curvature conversions."""
    return x * _projection_scale(x, float(curvature))[1]


class _MobiusAdd(torch.autograd.Function):
    """Fused Möbius addition with geoopt's boundary projection and a closed-form backward.

    The residual rule runs one Möbius addition per level with gradient; through geoopt's
    TorchScript ops that cost ~50 small kernels forward+backward and about twice the whole
    Euclidean quantizer step (benchmarks/quantizer.py). Here forward is ~12 ops and backward
    ~15. Values and gradients are tested against geoopt in float64.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:  # type: ignore[override]
        xy = (x * y).sum(-1, keepdim=True)
        x2 = (x * x).sum(-1, keepdim=True)
        y2 = (y * y).sum(-1, keepdim=True)
        two_cxy = 2 * c * xy
        a = 1 + two_cxy + c * y2
        b = 1 - c * x2
        d = (1 + two_cxy + c * c * x2 * y2).clamp_min(1e-15)
        raw = (a * x + b * y) / d
        norm, scale = _projection_scale(raw, c)
        out = raw * scale
        ctx.c = c
        ctx.save_for_backward(x, y, raw, norm, scale, a, b, d, x2, y2)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, y, raw, norm, scale, a, b, d, x2, y2 = ctx.saved_tensors
        c = ctx.c
        # through the projection: identity inside, (m/||u||)(I - û ûᵀ) on projected rows
        unit = raw / norm
        projected = scale < 1
        g = torch.where(projected, scale * (g - unit * (g * unit).sum(-1, keepdim=True)), g)
        gx_dot = (g * x).sum(-1, keepdim=True)
        gy_dot = (g * y).sum(-1, keepdim=True)
        go_dot = (g * raw).sum(-1, keepdim=True)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_x = (
                a * g
                + (2 * c) * (gx_dot - go_dot) * y
                - (2 * c) * (gy_dot + c * y2 * go_dot) * x
            ) / d
        if ctx.needs_input_grad[1]:
            grad_y = (
                b * g
                + (2 * c) * (gx_dot - go_dot) * x
                + (2 * c) * (gx_dot - c * x2 * go_dot) * y
            ) / d
        return grad_x, grad_y, None


def mobius_add(x: torch.Tensor, y: torch.Tensor, curvature: float) -> torch.Tensor:
    """``x ⊕_c y`` along the last dim, projected into the ball as geoopt's ``mobius_add`` does.

    Same values as ``poincare_ball(c).mobius_add(x, y)``; fewer kernels and a closed-form
    backward, for the quantizer's hot path.
    """
    return _MobiusAdd.apply(x, y, float(curvature))


# geoopt's clamps in ``dist`` (geoopt.manifolds.stereographic.math): artanh's argument to
# ±(1 - 1e-7) and the Möbius sum's denominator to >= 1e-15; sqrt(c) is sqrt(|k| + 1e-15).
ATANH_MAX = 1 - 1e-7
MIN_DENOM = 1e-15


def _distance_parts(x: torch.Tensor, y: torch.Tensor, c: float):
    """Forward of :func:`poincare_distance`: the distance and what its backward needs."""
    sqrt_c = (c + 1e-15) ** 0.5
    diff = x - y
    d = torch.linalg.vector_norm(diff, dim=-1)
    bx = torch.rsub(torch.linalg.vector_norm(x, dim=-1).square(), 1, alpha=c)  # 1 - c||x||^2
    by = torch.rsub(torch.linalg.vector_norm(y, dim=-1).square(), 1, alpha=c)
    bxy = bx * by
    # geoopt's denominator 1 - 2c<x,y> + c^2||x||^2||y||^2, as a sum of terms >= 0 in the ball
    den = torch.addcmul(bxy, d, d, value=c).clamp_min(MIN_DENOM)
    r = den.rsqrt()
    z = d * r * sqrt_c  # sqrt(c) ||(-x) ⊕ y||
    zc = z.clamp(-ATANH_MAX, ATANH_MAX)
    # artanh as geoopt writes it, (log(1 + z) - log(1 - z)) / 2: torch.atanh's vectorised and
    # scalar-tail kernels round differently, so identical rows at different offsets of a stacked
    # batch would differ, and log1p(-z) loses ~1e-6 (relative) as z nears 1 in float64
    artanh = (torch.log(1 + zc) - torch.log(1 - zc)) * 0.5
    return artanh * (2 / sqrt_c), (diff, d, bx, by, bxy, den, r, z, zc)


class _PoincareDistance(torch.autograd.Function):
    """Poincaré distance with geoopt's clamps and a closed-form backward.

    The output depends on ``x`` and ``y`` through ``||x - y||``, ``||x||^2`` and ``||y||^2`` only,
    so the gradient is ``a (x - y) + a_x x`` for ``x`` and ``-a (x - y) + a_y y`` for ``y`` with
    per-row scalars computed in forward. Forward keeps one ``[..., h]`` tensor, ``x - y``, and
    backward makes three passes over ``[..., h]``. Those scalars carry no graph, so a second
    derivative is refused (``once_differentiable``) rather than silently wrong.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:  # type: ignore[override]
        out, (diff, d, bx, by, bxy, den, r, z, zc) = _distance_parts(x, y, c)
        # out = 2/sqrt(c) artanh(z), z = sqrt(c) d / sqrt(den), d = ||x - y||, den = bxy + c d^2.
        # Where den is not clamped, 1 - z^2 = (bxy - 1e-15 d^2) / den (geoopt's sqrt(c + 1e-15)
        # in z) holds without the cancellation of 1 - z^2 near the boundary, and
        #   d out/d d = 2 r / s,  d out/d||x||^2 = c d r / (s bx)  (||y||^2 alike),  r = den^-1/2,
        # with s = 1 - 1e-15 d^2 / bxy. Where den is clamped, it is a constant: s = 1 - z^2 and
        # only the first term is left. Zero where geoopt's artanh clamp holds z.
        clamped = den <= MIN_DENOM
        s = torch.where(clamped, 1 - zc * zc, torch.rsub(d * d / bxy, 1, alpha=MIN_DENOM))
        two_r_s = torch.where(z <= ATANH_MAX, 2 * r / s, 0)
        a = torch.where(d > 0, two_r_s / d, 0)  # d out/d(x - y) = a (x - y)
        cud = torch.where(clamped, 0, (c * d) * two_r_s)  # d out/dx = cud / bx * x from ||x||^2
        ctx.save_for_backward(x, y, diff, -a, cud / bx, cud / by)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        x, y, diff, neg_a, ax, ay = ctx.saved_tensors
        t = diff * (g * neg_a).unsqueeze(-1)  # -a (x - y)
        grad_x = grad_y = None
        if ctx.needs_input_grad[0]:
            gx = (g * ax).sum_to_size(x.shape[:-1]).unsqueeze(-1)
            grad_x = torch.addcmul(t.sum_to_size(x.shape), x, gx, value=-1).neg_()
        if ctx.needs_input_grad[1]:
            grad_y = t.addcmul_(y, (g * ay).unsqueeze(-1)).sum_to_size(y.shape)
        return grad_x, grad_y, None


def poincare_distance(x: torch.Tensor, y: torch.Tensor, curvature: float) -> torch.Tensor:
    """Geodesic distance ``2/sqrt(c) artanh(sqrt(c) ||(-x) ⊕_c y||)`` along the last dim.

    The values and gradients of ``poincare_ball(c).dist(x, y)`` (geoopt 0.5.1, keepdim=False),
    with ``x`` and ``y`` broadcast against each other, each gradient summed back to its input's
    shape, in the inputs' dtype. It uses ``||(-x) ⊕_c y|| = ||x - y|| / sqrt(D)`` with geoopt's
    Möbius denominator ``D = 1 - 2c<x,y> + c^2||x||^2||y||^2``, computed as
    ``(1 - c||x||^2)(1 - c||y||^2) + c||x - y||^2``, and geoopt's clamps: artanh's argument at
    ``1 - 1e-7`` (distances past ~16.8/sqrt(c) stop there, with zero gradient), ``D`` at
    ``1e-15`` and ``sqrt(c + 1e-15)`` for ``sqrt(c)``. geoopt divides ``||Möbius numerator|| =
    ||x - y|| sqrt(D)`` by the clamped ``D``, this by ``sqrt(max(D, 1e-15))``: the two differ only
    when ``D < 1e-15``, which needs ``(1 - c||x||^2)(1 - c||y||^2) < 1e-15`` (both points within
    a relative 1.6e-8 of the boundary, or one closer still, or one outside the ball; geoopt's
    projection keeps points 1e-5 inside in float64, 4e-3 in float32). geoopt's ``dist`` neither
    projects the Möbius sum nor clamps its norm, and neither is done here.

    A fused autograd.Function (benchmarks/poincare_dist.py): forward makes one ``[..., h]``
    tensor, ``x - y``, the rest is ``[...]`` scalars; backward three passes over ``[..., h]``.
    ``x - y`` is formed directly, not from ``<x, y>``, so close points keep their accuracy, and
    the backward takes ``1 - z^2`` (z the artanh argument) from the factors of ``D`` rather than
    from ``z``: near the boundary in float32 its gradients are ~1e-5 off the float64 ones where
    geoopt's are ~1e-2 off (values: the same artanh as geoopt's, ~5e-4 vs ~1e-3). At ``x == y``
    the distance is 0 and the gradient 0 (the minimal subgradient, as torch's norm gives);
    geoopt's there is 0 or, depending on the rounding of its Möbius numerator, a vector of norm
    2/(1 - c||x||^2) (unit length in the ball's metric) in that rounding's direction.
    """
    c = float(curvature)
    if not c > 0:
        raise ValueError(f"curvature must be > 0, got {curvature}")
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return _PoincareDistance.apply(x, y, c)
    return _distance_parts(x, y, c)[0]
