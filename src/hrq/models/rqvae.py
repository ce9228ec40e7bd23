"""RQ-VAE and HRQ-VAE (HRQ paper §3.2, Algorithm 1, App. C.2).

HRQ-VAE: ``x ∈ R^d -> exp0 -> hyperbolic encoder -> HRQ -> hyperbolic decoder -> log0 -> x̂``.
RQ-VAE is the same network with Euclidean layers and Euclidean RQ. Loss:
``||x - x̂||^2 + L_RQ`` (per point, averaged over the batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import geoopt
import torch
from torch import nn

from hrq.manifold import poincare_ball
from hrq.nn import mlp
from hrq.quantize import ResidualQuantizer
from hrq.quantize.residual import Geometry, ResidualRule


@dataclass
class VAEOutput:
    """Result of a :class:`ResidualQuantizedVAE` forward pass.

    Attributes:
        reconstruction: ``x̂ [N, d]`` in the input space.
        codes: ``LongTensor [N, levels]``.
        latent: ``x_s [N, h]``, the encoder output that was quantized (a point of the ball for
            HRQ-VAE).
        loss: ``reconstruction_loss + quantizer_loss``.
        reconstruction_loss: mean over points of ``||x - x̂||^2``.
        quantizer_loss: the quantizer's codebook + commitment loss.
    """

    reconstruction: torch.Tensor
    codes: torch.Tensor
    latent: torch.Tensor
    loss: torch.Tensor
    reconstruction_loss: torch.Tensor
    quantizer_loss: torch.Tensor


class ResidualQuantizedVAE(nn.Module):
    """(H)RQ-VAE: residual-quantized autoencoder in Euclidean or Poincaré geometry.

    Args:
        input_dim: ``d``, e.g. 768 for MPNet embeddings.
        latent_dim: ``h``, the quantized dimension (paper: 32).
        hidden_dims: encoder widths (paper: 512, 256, 128); the decoder mirrors them.
        levels: ``k``, codebooks / tokens per item.
        codebook_size: codewords per level (int or one per level; paper: 256).
        geometry: ``"euclidean"`` (RQ-VAE) or ``"poincare"`` (HRQ-VAE).
        curvature: ball curvature ``c`` (HRQ-VAE).
        residual: HRQ residual rule, ``"paper"`` or ``"gyro"``.
        commitment: ``α`` of the quantizer loss.
        **quantizer_options: further :class:`ResidualQuantizer` options
            (``kmeans_init``, ``dead_code_threshold``, ``loss_distance`` ...).
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int = 32,
        hidden_dims: Sequence[int] = (512, 256, 128),
        *,
        levels: int = 3,
        codebook_size: int | Sequence[int] = 256,
        geometry: Geometry = "euclidean",
        curvature: float = 1.0,
        residual: ResidualRule = "paper",
        commitment: float = 0.25,
        **quantizer_options,
    ) -> None:
        super().__init__()
        self.geometry = geometry
        self.ball = poincare_ball(curvature) if geometry == "poincare" else None
        dims = [input_dim, *hidden_dims, latent_dim]
        self.encoder = mlp(dims, self.ball)
        self.decoder = mlp(dims[::-1], self.ball)
        self.quantizer = ResidualQuantizer(
            levels,
            codebook_size,
            latent_dim,
            geometry=geometry,
            curvature=curvature,
            residual=residual,
            commitment=commitment,
            **quantizer_options,
        )

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, d] -> x_s [N, h]``, the vector the quantizer sees (``E(exp0(x))`` on the ball)."""
        if self.ball is not None:
            x = self.ball.expmap0(x)
        return self.encoder(x)

    def from_latent(self, y: torch.Tensor) -> torch.Tensor:
        """Decode a (quantized) latent ``[N, h]`` to the input space ``[N, d]``."""
        out = self.decoder(y)
        return self.ball.logmap0(out) if self.ball is not None else out

    def forward(self, x: torch.Tensor) -> VAEOutput:
        latent = self.to_latent(x)
        q = self.quantizer(latent)
        recon = self.from_latent(q.quantized)
        recon_loss = (x - recon).pow(2).sum(-1).mean()
        return VAEOutput(recon, q.codes, latent, recon_loss + q.loss, recon_loss, q.loss)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, levels]`` of a batch; never changes the codebooks."""
        return self.quantizer.encode(self.to_latent(x))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[N, d]`` from codes alone."""
        return self.from_latent(self.quantizer.decode(codes))

    @torch.no_grad()
    def latent_norms(self, x: torch.Tensor) -> torch.Tensor:
        """Norms ``[N]`` for the paper's Table 4: ``||x_s||`` (RQ-VAE), ``||log0(x_s)||`` (HRQ-VAE)."""
        z = self.to_latent(x)
        if self.ball is not None:
            z = self.ball.logmap0(z)
        return z.norm(dim=-1)


def riemannian_optimizer(
    params, lr: float, kind: str = "adam", **kwargs
) -> torch.optim.Optimizer:
    """geoopt's Riemannian Adam or SGD: manifold parameters (codebooks and hyperbolic biases)
    take Riemannian steps, plain parameters ordinary ones."""
    if kind == "adam":
        return geoopt.optim.RiemannianAdam(params, lr=lr, **kwargs)
    if kind == "sgd":
        return geoopt.optim.RiemannianSGD(params, lr=lr, **kwargs)
    raise ValueError(f"optimizer kind must be 'adam' or 'sgd', got {kind!r}")
