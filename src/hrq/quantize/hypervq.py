"""HyperVQ (Goswami et al., §4): codeword choice by unidirectional Poincaré MLR, residually stacked.

One HyperVQ level with ``K`` codewords has, per class ``k``, a normal ``a_k ∈ R^n`` (a tangent
vector at the origin) and a scalar ``r_k``, with ``[a] = a / ||a||``:

    q_k = exp0(r_k [a_k])                                          (eq. 4, hyperplane point)
    ℓ_k(x) = 2||a_k||/√c · asinh( (2√c <x, [a_k]> cosh(2√c r_k) - (1 + c||x||^2) sinh(2√c r_k))
                                  / (1 - c||x||^2) )              (eq. 6)
    training: k* = argmax_k softmax((ℓ_k(x) + g_k) / τ), g_k ~ Gumbel(0, 1)   (eq. 13-14)
    eval:     k* = argmax_k ℓ_k(x)                                 (deterministic)
    codeword: z_q = log0(q_k*) = r_k* [a_k*]                       (eq. 15)
    τ_j = max(τ_max δ^j, τ_min) at training iteration j            (Algorithm 1, line 10)

``ℓ_k`` is the unidirectional MLR of Shimizu et al. (HNN++, 2021) in the form of their official
code, which HyperVQ says it follows. With ``λ_x = 2 / (1 - c||x||^2)`` the asinh argument is
``λ_x <√c x, [a_k]> cosh(2√c r_k) - (λ_x - 1) sinh(2√c r_k)``, and ``ℓ_k(x)`` equals Ganea et al.'s
MLR logit ``λ_q ||a'_k|| d^±(x, H)`` for the hyperplane ``H`` through ``q_k`` orthogonal to
``a'_k = P_{0→q_k}(a_k) = (1 - c||q_k||^2) a_k``, so ``λ_q ||a'_k|| = 2||a_k||`` (the tests check
this against geoopt's ``dist2plane``). eq. 6 of HyperVQ only writes ``ℓ_k ∝ ||a_k|| d^±``; the
factor 2 matters because it scales the logits against ``τ``.

The gradient of the discrete choice is the straight-through Gumbel-softmax estimator: the value
is exactly the chosen codeword, the gradient that of ``softmax((ℓ + g)/τ) @ codewords``. HyperVQ
has no codebook or commitment loss (Algorithm 1 updates the quantizer's ``{a_k, r_k}`` by the
downstream objective alone), so ``QuantizerOutput.loss`` is zero and the encoder is reached only
through the logits, as in Gumbel VQ; there is no identity straight-through from input to output.

HyperVQ is a single VQ. ``levels > 1`` stack it residually, in one of two geometries
(``levels = 1`` with ``geometry="euclidean"`` is exactly the paper's HyperVQ):

``geometry="euclidean"`` (HyperVQ's encoder/decoder are Euclidean)
    Inputs and outputs are tangent vectors; level ``ℓ`` classifies ``exp0(r_{ℓ-1})``, the
    residual is ``r_ℓ = r_{ℓ-1} - r_k[a_k]`` in the tangent space (where eq. 15 puts the codeword,
    as HG-Rec does) and the reconstruction is the sum of the tangent codewords.

``geometry="poincare"`` (HRQ residuals with HyperVQ's choice, the HRQ paper's future work)
    Inputs and outputs are points of the ball (projected in first); level ``ℓ`` classifies the
    residual ``r_{ℓ-1}`` itself, the codeword is ``q_k`` on the ball, the residual is HRQ's
    ``r_ℓ = r_{ℓ-1} ⊕_c (-q_k)`` and the reconstruction the left fold
    ``((q_{k_1} ⊕ q_{k_2}) ⊕ ...)``, as :class:`~hrq.quantize.residual.ResidualQuantizer` with
    ``residual="paper"``.

The paper gives no values for ``(τ_max, τ_min, δ)``; the defaults ``(2, 0.5, 0.999995)`` are
those of wav2vec 2.0's Gumbel VQ (Baevski et al. 2020), whose classification-style codeword
choice HyperVQ builds on.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from hrq.manifold import mobius_add, poincare_ball, project
from hrq.quantize.base import (
    AnnealedQuantizer,
    ExponentialTemperature,
    Geometry,
    QuantizerOutput,
    combine_codewords,
)

__all__ = ["ExponentialTemperature", "HyperVQQuantizer", "unidirectional_mlr"]

# Floor of ||a_k|| and of the conformal denominator 1 - c||x||^2 (geoopt-projected float32 points
# keep the latter above ~8e-3; the floor only guards hand-written points outside the ball).
_EPS = 1e-15
_MAX_TWO_SQRT_C_R = 40.0


def unidirectional_mlr(
    x: torch.Tensor, normals: torch.Tensor, radii: torch.Tensor, curvature: float
) -> torch.Tensor:
    """Unidirectional Poincaré MLR logits ``[N, K]`` (module doc, eq. 6) by one GEMM.

    Args:
        x: points of the ball ``[N, n]``.
        normals: ``a_k [K, n]``, tangent vectors at the origin (only their direction and norm matter).
        radii: ``r_k [K]``, signed tangent distance of the hyperplane point ``q_k`` from the origin.
        curvature: ``c > 0``.
    """
    sqrt_c = curvature**0.5
    norm = normals.norm(dim=-1).clamp_min(_EPS)
    # |2√c r_k| <= 40 keeps cosh/sinh finite in float32 (they overflow past 89) with room for the
    # 1/(1 - c||x||^2) <= 125 of projected points. It only binds for hyperplanes more than 20/√c
    # from the origin, far beyond the float32 ball's largest tangent radius
    # artanh(1 - 4e-3)/√c ≈ 3.1/√c.
    two_r = (2 * sqrt_c * radii).clamp(-_MAX_TWO_SQRT_C_R, _MAX_TWO_SQRT_C_R)
    # cosh(2√c r_k) and 2√c are folded into the [K, n] operand of the GEMM
    weight = normals * (2 * sqrt_c * torch.cosh(two_r) / norm).unsqueeze(-1)
    cx2 = curvature * x.pow(2).sum(-1, keepdim=True)
    arg = (x @ weight.t() - (1 + cx2) * torch.sinh(two_r)) / (1 - cx2).clamp_min(_EPS)
    return (2 / sqrt_c) * norm * torch.asinh(arg)


class HyperVQQuantizer(AnnealedQuantizer):
    """k-level HyperVQ: unidirectional Poincaré MLR codeword choice with Gumbel-softmax (module doc).

    Args:
        levels: number of codebooks ``k``.
        codebook_size: codewords (MLR classes) per level, an int or one int per level.
        dim: dimension ``n`` of the vectors.
        geometry: ``"euclidean"`` (tangent residuals, HyperVQ) or ``"poincare"`` (Möbius
            residuals on the ball, HRQ x HyperVQ).
        curvature: ball curvature ``c > 0``.
        max_temperature, min_temperature, temperature_decay: ``τ_max``, ``τ_min``, ``δ`` of
            ``τ_j = max(τ_max δ^j, τ_min)``; ``j`` counts training-mode forward passes and can be
            set with :meth:`set_step`.
        init_scale: the initial tangent codewords ``r_k [a_k]`` are ``N(0, init_scale^2 I)``
            draws ``v_k``: ``a_k = v_k / ||v_k||`` (unit normals, so the logit scale ``2||a_k||``
            starts at 2) and ``r_k = ||v_k||``.

    Attributes:
        normals: per level a parameter ``a [K_ℓ, dim]``.
        radii: per level a parameter ``r [K_ℓ]``.
        temperature_schedule: the :class:`ExponentialTemperature`.

    In ``eval()`` mode the codes are the argmax of the logits: no noise, no step advance.
    """

    def __init__(
        self,
        levels: int,
        codebook_size: int | Sequence[int],
        dim: int,
        *,
        geometry: Geometry = "euclidean",
        curvature: float = 1.0,
        max_temperature: float = 2.0,
        min_temperature: float = 0.5,
        temperature_decay: float = 0.999995,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(levels, codebook_size, dim)
        if geometry not in ("euclidean", "poincare"):
            raise ValueError(f"geometry must be 'euclidean' or 'poincare', got {geometry!r}")
        if not 0 < temperature_decay <= 1:
            raise ValueError(f"temperature_decay must be in (0, 1], got {temperature_decay}")
        self.geometry = geometry
        self.ball = poincare_ball(curvature)
        self.curvature = float(curvature)
        self.temperature_schedule = ExponentialTemperature(
            max_temperature, -math.log(temperature_decay), min_temperature
        )
        inits = [torch.randn(size, dim) * init_scale for size in self.codebook_sizes]
        self.normals = nn.ParameterList(
            nn.Parameter(v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)) for v in inits
        )
        self.radii = nn.ParameterList(nn.Parameter(v.norm(dim=-1)) for v in inits)

    # ------------------------------------------------------------------ geometry
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp points into the ball as geoopt's ``projx`` (identity for ``"euclidean"``)."""
        return project(x, self.curvature) if self.geometry == "poincare" else x

    def codewords(self, level: int) -> torch.Tensor:
        """Level ``level``'s codewords ``[K_ℓ, dim]``: tangent ``r_k [a_k]`` (eq. 15) for
        ``"euclidean"``, the hyperplane points ``q_k = exp0(r_k [a_k])`` (eq. 4) for ``"poincare"``."""
        normals = self.normals[level]
        unit = normals / normals.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        tangent = self.radii[level].unsqueeze(-1) * unit
        return self.ball.expmap0(tangent) if self.geometry == "poincare" else tangent

    def logits(self, level: int, r: torch.Tensor) -> torch.Tensor:
        """MLR logits ``[N, K_ℓ]`` of level ``level`` for residuals ``r [N, dim]`` (tangent
        vectors, mapped by ``exp0``, for ``"euclidean"``; ball points for ``"poincare"``)."""
        point = r if self.geometry == "poincare" else self.ball.expmap0(r)
        return unidirectional_mlr(point, self.normals[level], self.radii[level], self.curvature)

    def _subtract(self, r: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return mobius_add(r, -e, self.curvature) if self.geometry == "poincare" else r - e

    def _reconstruct(self, words: list[torch.Tensor]) -> torch.Tensor:
        """The sum of tangent codewords, or the left fold ``(q_1 ⊕ q_2) ⊕ ...`` on the ball."""
        return combine_codewords(words, self.curvature if self.geometry == "poincare" else None)

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantize ``x [N, dim]`` (tangent vectors, or ball points for ``"poincare"``).

        Returns codes ``[N, k]``, the reconstruction ``[N, dim]`` (gradient through the
        Gumbel-softmax straight-through estimator), a zero ``loss`` and the per-level inputs
        ``r_0 .. r_{k-1}`` (each ``[N, dim]``). A training pass advances the temperature step.
        """
        self._check_input(x)
        r = self.project(x)
        tau = self.temperature
        codes, words, residuals = [], [], []
        for level in range(self.levels):
            # eq. 13-14 in training (Gumbel-softmax, straight-through), the argmax in eval
            idx, e = self._choose(self.logits(level, r), self.codewords(level), tau,
                                  straight_through=True)
            codes.append(idx)
            words.append(e)
            residuals.append(r)
            if level + 1 < self.levels:
                r = self._subtract(r, e)
        self._advance_step()
        quantized = self._reconstruct(words)
        return QuantizerOutput(torch.stack(codes, -1), quantized, x.new_zeros(()), residuals)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, geometry={self.geometry}, curvature={self.curvature}"
