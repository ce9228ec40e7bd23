"""Float64 closed forms of the Poincaré-ball operations (Ganea et al. 2018; HRQ paper §2.1),
written independently of geoopt so the tests can check geoopt and hrq against them."""

import torch


def mobius_add(x, y, c):
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c * c * x2 * y2)


def dist(u, v, c):
    """Paper eq. 1; the argument is clamped at 1 because rounding can put it just below."""
    u2 = (u * u).sum(-1)
    v2 = (v * v).sum(-1)
    uv2 = ((u - v) ** 2).sum(-1)
    arg = 1 + 2 * c * uv2 / ((1 - c * u2) * (1 - c * v2))
    return torch.arccosh(arg.clamp_min(1.0)) / c**0.5


def expmap0(v, c):
    n = v.norm(dim=-1, keepdim=True)
    return torch.tanh(c**0.5 * n) * v / (c**0.5 * n)


def logmap0(y, c):
    n = y.norm(dim=-1, keepdim=True)
    return torch.arctanh(c**0.5 * n) * y / (c**0.5 * n)


def mobius_matvec(m, x, c):
    mx = x @ m.t()
    xn = x.norm(dim=-1, keepdim=True)
    mxn = mx.norm(dim=-1, keepdim=True)
    return torch.tanh(mxn / xn * torch.arctanh(c**0.5 * xn)) * mx / (c**0.5 * mxn)


def random_ball_points(n, dim, c, max_radius=0.95, generator=None, dtype=torch.float64):
    """Points with Euclidean norm uniform in (0, max_radius / sqrt(c))."""
    d = torch.randn(n, dim, generator=generator, dtype=dtype)
    d = d / d.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, generator=generator, dtype=dtype) * max_radius / c**0.5
    return d * r
