"""HG-Rec's hyperbolic residual quantizer (HG-Rec §3.1, eq. 5-8) and its codebook sizes (§3.2).

Residuals and codewords are tangent vectors at the origin of the Poincaré ball (``R^n``); only
the codeword *choice* and the loss use hyperbolic distance. Per level ``ℓ = 1..L``:

    r_0 = z                                            (encoder output, R^n)
    c_ℓ = argmin_i d_B(exp0(r_{ℓ-1}), exp0(e_{ℓ,i}))   (eq. 5-6)
    r_ℓ = r_{ℓ-1} - e_{ℓ,c_ℓ}                          (eq. 7, in the tangent space)
    ẑ   = Σ_ℓ e_{ℓ,c_ℓ}                                (§3.1, "The loss of hyperbolic RQ-VAE")
    L_rqvae = Σ_ℓ d_B(sg[exp0 r_{ℓ-1}], exp0 e_{ℓ,c_ℓ})^2
                + β d_B(exp0 r_{ℓ-1}, sg[exp0 e_{ℓ,c_ℓ}])^2     (eq. 8, second line)

Reading of the paper, where it leaves room:

* eq. 7 writes ``r_{ℓ-1} = log0(r^H_{ℓ-1})``, i.e. the round trip ``log0(exp0(r))``. That is the
  identity in exact arithmetic but clips tangent norms beyond geoopt's projection radius
  (``artanh(1 - 4e-3) ≈ 3.1`` in float32), so the residual is taken from ``r`` directly.
* ``ẑ = Σ_{ℓ=0}^{L}`` in the paper indexes codebooks from 0 while they are defined for ``ℓ = 1..L``;
  the sum runs over the ``L`` chosen codewords.
* eq. 8 puts ``β`` on the commitment term of *each* level (the sum covers both terms) and the
  batch mean is implicit. Earlier codewords enter ``r_{ℓ-1}`` with stop-gradient, as in
  :class:`~hrq.quantize.residual.ResidualQuantizer`: a codeword is trained only by its own
  level's codebook term (eq. 8 does not say whether the commitment of level ``ℓ`` reaches the
  codewords of levels ``< ℓ``).
* ``L_recon = d_B(exp0(s), exp0(ŝ))^2`` of eq. 8 compares the autoencoder's *input* ``s`` and
  output ``ŝ``; it belongs to the VAE, not to this module
  (``ResidualQuantizedVAE(..., quantizer=HGRecQuantizer(...), reconstruction="hyperbolic")``).

The quantized output ``ẑ`` is a tangent vector, so the surrounding autoencoder is Euclidean
(``geometry = "euclidean"``), as in HG-Rec's ``z = Encoder(s) ∈ R^n``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from hrq.manifold import poincare_ball
from hrq.quantize.base import QuantizerBase, QuantizerOutput
from hrq.quantize.distance import nearest
from hrq.quantize.kmeans import kmeans

__all__ = ["HGRecQuantizer", "pyramid_codebook_sizes"]


def pyramid_codebook_sizes(first: int, levels: int, growth: float = 2.0) -> list[int]:
    """HG-Rec's differential-length codebook sizes, eq. 12: ``K_ℓ = round(K_1 γ^(ℓ-1))``.

    The paper picks ``γ ≈ 2`` and ``K_1 ∈ {16, 32, 64}`` with the last level at most 256, e.g.
    ``pyramid_codebook_sizes(64, 3) == [64, 128, 256]``.
    """
    if first < 1 or levels < 1 or not growth > 0:
        raise ValueError(f"need first >= 1, levels >= 1, growth > 0; got {first}, {levels}, {growth}")
    return [max(1, round(first * growth**i)) for i in range(levels)]


class HGRecQuantizer(QuantizerBase):
    """HG-Rec's hyperbolic RQ: tangent-space residuals, hyperbolic-distance choice and loss.

    Args:
        levels: number of codebooks ``L`` (tokens per item).
        codebook_size: codewords per level, an int or one int per level (``K_ℓ``).
        dim: dimension ``n`` of the (tangent) vectors.
        curvature: ball curvature ``c > 0`` (paper: 1).
        commitment: ``β`` of eq. 8 (paper tunes it in 0.1 .. 1.0).
        kmeans_init: initialise each level's codebook by Poincaré k-means of ``exp0`` of that
            level's residuals, mapped back with ``log0``, on the data given to :meth:`init_from`
            (else on the first training batch) (the paper
            does not describe its init; this is the k-means init TIGER-style RQ-VAEs use, done
            in the geometry of the codeword choice).
        kmeans_iters: Lloyd iterations of that k-means.
        init_scale: std of the random normal (tangent) codebook init.

    Attributes:
        levels, codebook_sizes, dim, curvature, commitment: as given.
        geometry: ``"euclidean"``: inputs and outputs are tangent vectors (``R^n``).
        ball, tangent_ball: the Poincaré ball of ``curvature`` whose distance after ``exp0``
            compares them.
        codebooks: per level a plain parameter ``[K_ℓ, dim]`` of tangent codewords ``e_{ℓ,i}``
            (the paper parameterises them in the tangent space for numerical stability).
    """

    def __init__(
        self,
        levels: int,
        codebook_size: int | Sequence[int],
        dim: int,
        *,
        curvature: float = 1.0,
        commitment: float = 0.25,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(levels, codebook_size, dim)
        self.ball = poincare_ball(curvature)
        self.curvature = float(curvature)
        self.commitment = commitment
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.randn(size, dim) * init_scale) for size in self.codebook_sizes
        )
        self._setup_kmeans_init(kmeans_init, kmeans_iters)

    @property
    def tangent_ball(self):
        return self.ball

    @torch.no_grad()
    def _init_level(self, level: int, r: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Poincaré k-means of ``exp0`` of the tangent residuals ``r [N, dim]``, mapped back by ``log0``."""
        centroids = kmeans(
            self.ball.expmap0(r), self.codebook_sizes[level], iters=self.kmeans_iters,
            curvature=self.curvature, generator=generator,
        )
        self.codebooks[level].copy_(self.ball.logmap0(centroids))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize tangent vectors ``z [N, dim]``.

        Returns codes ``[N, L]``, ``quantized = ẑ [N, dim]`` with a straight-through gradient
        (``dẑ/dz = I``), ``loss = L_rqvae`` of eq. 8 (averaged over points) and the tangent
        residuals ``r_0 .. r_{L-1}``, each ``[N, dim]``.
        """
        self._check_input(z)
        first_batch = self._kmeans_pending()
        r = z
        codes, words, residuals = [], [], []
        loss = z.new_zeros(())
        for level, book in enumerate(self.codebooks):
            if first_batch:
                self._init_level(level, r)
            r_h = self.ball.expmap0(r)  # eq. 5
            book_h = self.ball.expmap0(book)
            # eq. 6 by the GEMM kernel: arcosh is monotone, so its argument orders the distances
            idx = nearest(r_h.detach(), book_h.detach(), self.curvature)
            e_h = book_h[idx]
            loss = loss + (
                self.ball.dist(r_h.detach(), e_h).pow(2)
                + self.commitment * self.ball.dist(r_h, e_h.detach()).pow(2)
            ).mean()
            e = book[idx].detach()
            codes.append(idx)
            words.append(e)
            residuals.append(r)
            r = r - e  # eq. 7
        if first_batch:
            self.initialized.fill_(True)
        z_hat = self._reconstruct(words)
        return QuantizerOutput(torch.stack(codes, -1), z_hat + (z - z.detach()), loss, residuals)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, curvature={self.curvature}, commitment={self.commitment}"
