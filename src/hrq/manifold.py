"""The one place hrq builds its Poincaré ball."""

from __future__ import annotations

import geoopt
import torch


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
