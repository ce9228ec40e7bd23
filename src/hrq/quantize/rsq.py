"""RSQ-VAE's stochastic residual quantizer (HQ-VAE, Takida et al., §4.3 and App. C.2, E).

Residual top-down layers with stochastic quantization, for ``l = 1..L`` and encoder output
``Ẑ = H_φ(x)`` (one vector per item here, ``d_l = 1``):

    Z̃_l = Ẑ_l = Ẑ - Σ_{l'<l} Z_{l'}                        (eq. 9; Z̃_l = Ẑ_l as footnote 1)
    P̂_{s_l^2}(z_l = b_k | Z̃_l) ∝ exp(-||Z̃_l - b_k||^2 / (2 s_l^2))     (eq. 2, learned s_l^2)
    training: Z_l = softmax((log P̂ + g) / τ) @ B_l, g ~ Gumbel(0, 1)   (App. E, relaxed sample)
    eval:     Z_l = b_{k*}, k* = argmax P̂ = the nearest codeword       (deterministic RQ)
    τ_t = max(c_τ, exp(-r t)), paper: c_τ = 0, r = 1e-5              (App. E)

The objective is eq. 14 (no β, no stop-gradient, no codebook reset or EMA):

    J = D/2 log σ^2 + ||x - f_θ(Z_{1:L})||^2 / (2σ^2)      <- the VAE (decoder variance σ^2)
        + ||Ẑ - Σ_l Z_l||^2 / (2 Σ_l s_l^2)                 <- this module
        - Σ_l H(P̂_{s_l^2}(Z_l | Z̃_l))                      <- this module

so ``QuantizerOutput.loss`` is the batch mean of the last two terms (constants ``Σ log K_l`` and
``d_b/2`` dropped). The expectation over ``Q`` is the single relaxed sample, and ``Z̃ = Ẑ`` in the
second term as App. C.2 says. Note the third term involves only the *total* quantization error
``Ẑ - Σ_l Z_l`` (eq. 14), not the per-level errors of the naïve ELBO eq. 10 or of RQ-VAE's eq. 15.
Alone it is minimised by ``s^2 -> ∞`` (uniform posteriors); the decoder term, through the sampled
``Z``, pulls back (the "self-annealing" of SQ-VAE), so this module is trained with the VAE loss.
A VAE computing ``||x - x̂||^2`` (as :class:`~hrq.models.rqvae.ResidualQuantizedVAE`) is eq. 14's
decoder term with the variance fixed at ``σ^2 = 1/2``; the paper instead updates ``σ^2`` by its
maximum-likelihood value (Takida et al. 2022a), which needs the ``D/2 log σ^2`` term in the VAE.

Ambiguity: App. F writes ``τ = exp(10^-5 t)``, which grows; App. E's ``exp(-r t)`` is meant.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hrq.quantize.base import AnnealedQuantizer, ExponentialTemperature, QuantizerOutput
from hrq.quantize.distance import nearest_scores
from hrq.quantize.kmeans import kmeans

__all__ = ["RSQQuantizer"]


class RSQQuantizer(AnnealedQuantizer):
    """RSQ-VAE's stochastic residual quantizer in Euclidean space (module doc).

    Args:
        levels: number of codebooks ``L``.
        codebook_size: codewords per level, an int or one int per level (``K_l``).
        dim: dimension ``d_b`` of the vectors.
        init_variance: initial ``s_l^2`` of every level (learned as ``log s_l^2``).
        temperature_decay: ``r`` of ``τ_t = max(c_τ, exp(-r t))`` (paper: 1e-5); ``t`` counts
            training-mode forward passes and can be set with :meth:`set_step`.
        min_temperature: ``c_τ`` (paper: 0).
        kmeans_init: initialise each level's codebook by k-means of that level's residuals
            (on the data given to :meth:`init_from`, else on the first training batch). Not part
            of the paper, which uses no such heuristic: off by default, and the pipeline's
            tokenizer-wide ``kmeans_init`` does not reach RSQ (set it in the method's
            ``options:``); there for comparisons with RQ-VAE's init.
        kmeans_iters: Lloyd iterations of that k-means.
        init_scale: std of the random normal codebook init.

    Attributes:
        geometry: ``"euclidean"``.
        codebooks: per level a parameter ``B_l [K_l, dim]``.
        log_variance: ``log s_l^2 [L]``.
        temperature_schedule: the :class:`~hrq.quantize.base.ExponentialTemperature`.

    In ``eval()`` mode the codes are the nearest codewords (greedy RQ), without noise, and neither
    the codebooks nor the temperature step change.
    """

    def __init__(
        self,
        levels: int,
        codebook_size: int | Sequence[int],
        dim: int,
        *,
        init_variance: float = 1.0,
        temperature_decay: float = 1e-5,
        min_temperature: float = 0.0,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(levels, codebook_size, dim)
        if not init_variance > 0:
            raise ValueError(f"init_variance must be > 0, got {init_variance}")
        self.codebooks = nn.ParameterList(
            nn.Parameter(torch.randn(size, dim) * init_scale) for size in self.codebook_sizes
        )
        self.log_variance = nn.Parameter(torch.full((levels,), math.log(init_variance)))
        self.temperature_schedule = ExponentialTemperature(1.0, temperature_decay, min_temperature)
        self._setup_kmeans_init(kmeans_init, kmeans_iters)

    @torch.no_grad()
    def _init_level(self, level: int, r: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Euclidean k-means of level ``level``'s residuals ``r [N, dim]`` (only with ``kmeans_init``
        or an explicit :meth:`init_from`)."""
        self.codebooks[level].copy_(kmeans(r, self.codebook_sizes[level], iters=self.kmeans_iters,
                                           generator=generator))

    @property
    def variance(self) -> torch.Tensor:
        """``s_l^2 [L]``."""
        return self.log_variance.exp()

    def logits(self, level: int, r: torch.Tensor) -> torch.Tensor:
        """Posterior logits ``[N, K_l]`` of eq. 2 for residuals ``r [N, dim]``, up to the per-row
        constant ``-||r||^2 / (2 s_l^2)``, which cancels in the softmax, the entropy, the Gumbel
        sample and their gradients (one GEMM instead of an ``[N, K, dim]`` broadcast)."""
        return nearest_scores(r, self.codebooks[level]) / (-2 * self.variance[level])

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``z = Ẑ [N, dim]``.

        Returns codes ``[N, L]`` (in training the argmax of the relaxed samples), the
        reconstruction ``Σ_l Z_l [N, dim]`` (relaxed in training, hard in eval; no
        straight-through), ``loss`` = this module's part of eq. 14 averaged over points, and the
        residuals ``Ẑ_1 .. Ẑ_L`` (each ``[N, dim]``). A training pass advances the temperature step.
        """
        self._check_input(z)
        first_batch = self._kmeans_pending()
        tau = self.temperature
        r = z
        codes, words, residuals = [], [], []
        entropy = z.new_zeros(z.shape[0])
        for level, book in enumerate(self.codebooks):
            if first_batch:
                self._init_level(level, r.detach())
            logits = self.logits(level, r)
            log_p = F.log_softmax(logits, dim=-1)
            entropy = entropy - (log_p.exp() * log_p).sum(-1)
            # the relaxed sample softmax((logits + g) / τ) @ B_l in training, the nearest in eval
            idx, e = self._choose(logits, book, tau, straight_through=False)
            codes.append(idx)
            words.append(e)
            residuals.append(r)
            r = r - e  # eq. 9; after the last level r = Ẑ - Σ_l Z_l
        if first_batch:
            self.initialized.fill_(True)
        self._advance_step()
        loss = (r.pow(2).sum(-1) / (2 * self.variance.sum()) - entropy).mean()
        return QuantizerOutput(torch.stack(codes, -1), self._reconstruct(words), loss, residuals)
