"""Hyperbolic neural-network layers on the Poincaré ball (Ganea et al., 2018), built on geoopt."""

from __future__ import annotations

import math
from typing import Callable

import geoopt
import torch
from torch import nn


class MobiusLinear(nn.Module):
    """Möbius linear layer ``y = (W ⊗_c x) ⊕_c b`` (Ganea et al. 2018, eq. 25-26).

    ``W ⊗_c x`` is geoopt's ``mobius_matvec``; the bias ``b`` is a point of the ball stored as a
    :class:`geoopt.ManifoldParameter`, so Riemannian optimizers update it on the manifold.

    Args:
        in_features: input dimension.
        out_features: output dimension.
        ball: the Poincaré ball the layer maps between.
        bias: whether to add the hyperbolic bias.

    Shapes: ``[N, in_features] -> [N, out_features]``, points of ``ball``.
    """

    def __init__(
        self, in_features: int, out_features: int, ball: geoopt.PoincareBall, bias: bool = True
    ) -> None:
        super().__init__()
        self.ball = ball
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = (
            geoopt.ManifoldParameter(torch.zeros(out_features), manifold=ball) if bias else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ball.mobius_matvec(self.weight, x)
        if self.bias is not None:
            y = self.ball.mobius_add(y, self.bias)
        return self.ball.projx(y)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"in_features={inp}, out_features={out}, c={float(self.ball.c)}"


class HyperbolicActivation(nn.Module):
    """Nonlinearity applied in the tangent space at the origin: ``exp0 ∘ f ∘ log0``.

    Shapes: ``[N, d] -> [N, d]``, points of ``ball``.
    """

    def __init__(
        self, ball: geoopt.PoincareBall, fn: Callable[[torch.Tensor], torch.Tensor] = torch.relu
    ) -> None:
        super().__init__()
        self.ball = ball
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ball.expmap0(self.fn(self.ball.logmap0(x)))


def mlp(
    dims: list[int], ball: geoopt.PoincareBall | None = None
) -> nn.Sequential:
    """A ReLU MLP through ``dims``, Euclidean or (with ``ball``) hyperbolic; no activation last.

    Shapes: ``[N, dims[0]] -> [N, dims[-1]]``.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(MobiusLinear(a, b, ball) if ball is not None else nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(HyperbolicActivation(ball) if ball is not None else nn.ReLU())
    return nn.Sequential(*layers)
