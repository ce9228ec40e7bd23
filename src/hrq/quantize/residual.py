"""Residual quantization in Euclidean space (RQ) and on the Poincaré ball (HRQ).

HRQ follows the HRQ paper (§3.1, Algorithm 1). Two residual rules are offered on the ball,
because Möbius addition is neither commutative nor associative:

``residual="paper"`` (the paper's formula)
    ``r_{i+1} = r_i ⊖_c e_i = r_i ⊕_c (-e_i)`` and the reconstruction is the left fold of
    Algorithm 1, ``y = ((0 ⊕ e_0) ⊕ e_1) ⊕ ... ⊕ e_{k-1}``. Even when the last residual is a
    codeword, ``y`` is in general *not* equal to ``x``: ``(x ⊖ e) ⊕ e ≠ x`` on the ball.

``residual="gyro"`` (left subtraction)
    ``r_{i+1} = (-e_i) ⊕_c r_i`` with the right-nested reconstruction
    ``y = e_0 ⊕ (e_1 ⊕ (... ⊕ e_{k-1}))``. The left-cancellation law
    ``a ⊕ (-a ⊕ b) = b`` gives ``x = e_0 ⊕ (e_1 ⊕ (... ⊕ (e_{k-1} ⊕ r_k)))``, so the
    reconstruction is exact whenever the last residual is a codeword (``r_k = 0``).

Both reduce to Euclidean RQ as ``c -> 0``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import geoopt
import torch
from torch import nn

from hrq.manifold import mobius_add, poincare_ball, project
from hrq.quantize.base import Geometry, QuantizerBase, QuantizerOutput, combine_codewords
from hrq.quantize.distance import nearest
from hrq.quantize.kmeans import kmeans

__all__ = ["Geometry", "LossDistance", "QuantizerOutput", "ResidualQuantizer", "ResidualRule"]

ResidualRule = Literal["paper", "gyro"]
LossDistance = Literal["squared_norm", "hyperbolic"]


class ResidualQuantizer(QuantizerBase):
    """k-level residual quantizer in Euclidean space or on the Poincaré ball.

    Args:
        levels: number of codebooks ``k`` (tokens per multitoken).
        codebook_size: codewords per level, an int or one int per level.
        dim: dimension ``h`` of the quantized vectors.
        geometry: ``"euclidean"`` (RQ) or ``"poincare"`` (HRQ).
        curvature: ball curvature ``c > 0`` (Poincaré only; the ball is ``c||x||^2 < 1``).
        residual: ``"paper"`` or ``"gyro"`` residual rule (Poincaré only; see module doc).
        commitment: ``α`` in ``Σ_i ||sg[r_i] - e_i||^2 + α ||r_i - sg[e_i]||^2``.
        loss_distance: ``"squared_norm"`` (Algorithm 1) or ``"hyperbolic"``, the squared
            hyperbolic distance in place of ``||.||^2`` (HG-Rec eq. 8; Poincaré only).
        kmeans_init: initialise each level's codebook by k-means (in the quantizer's geometry)
            on that level's residuals: of the data given to :meth:`init_from` (what
            :func:`~hrq.models.train_vae` does, with the latents of all items or a large
            sample), else of the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: in training, a codeword whose exponential moving average share
            of a batch's assignments falls below ``dead_code_threshold / K`` (``K`` the level's
            codebook size, so the threshold is a fraction of a uniform share and means the same
            for any batch and codebook size) is replaced by a residual of the current batch
            (distinct residuals, at most one per point); ``0`` disables replacement.
        usage_decay: decay of that moving average per training batch (the average starts at the
            uniform share ``1 / K``; an unused codeword falls below the threshold after about
            ``ln(threshold) / ln(usage_decay)`` batches).
        init_scale: std of the random normal codebook init (mapped with exp0 on the ball).

    Codebooks are :class:`geoopt.ManifoldParameter` on the ball (or plain parameters in
    Euclidean space), so geoopt's Riemannian optimizers take Riemannian steps on them.
    In ``eval()`` mode a forward pass never changes the codebooks.
    """

    def __init__(
        self,
        levels: int,
        codebook_size: int | Sequence[int],
        dim: int,
        *,
        geometry: Geometry = "euclidean",
        curvature: float = 1.0,
        residual: ResidualRule = "paper",
        commitment: float = 0.25,
        loss_distance: LossDistance = "squared_norm",
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
        init_scale: float = 0.1,
    ) -> None:
        super().__init__(levels, codebook_size, dim)
        if geometry not in ("euclidean", "poincare"):
            raise ValueError(f"geometry must be 'euclidean' or 'poincare', got {geometry!r}")
        if residual not in ("paper", "gyro"):
            raise ValueError(f"residual must be 'paper' or 'gyro', got {residual!r}")
        if loss_distance not in ("squared_norm", "hyperbolic"):
            raise ValueError(
                f"loss_distance must be 'squared_norm' or 'hyperbolic', got {loss_distance!r}"
            )
        if geometry == "euclidean" and loss_distance == "hyperbolic":
            raise ValueError("loss_distance='hyperbolic' needs geometry='poincare'")
        if geometry == "poincare" and not curvature > 0:
            raise ValueError(f"curvature must be > 0, got {curvature}")

        self.geometry = geometry
        self.curvature = float(curvature)
        self.residual = residual
        self.commitment = commitment
        self.loss_distance = loss_distance
        if dead_code_threshold < 0 or not 0 <= usage_decay < 1:
            raise ValueError(f"need dead_code_threshold >= 0 and 0 <= usage_decay < 1, "
                             f"got {dead_code_threshold}, {usage_decay}")
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay

        self.ball = poincare_ball(curvature) if geometry == "poincare" else None
        manifold = self.ball if self.ball is not None else geoopt.Euclidean()
        books = []
        for size in self.codebook_sizes:
            init = torch.randn(size, dim) * init_scale
            if self.ball is not None:
                init = self.ball.expmap0(init)
            books.append(geoopt.ManifoldParameter(init, manifold=manifold))
        self.codebooks = nn.ParameterList(books)
        self._setup_kmeans_init(kmeans_init, kmeans_iters)
        # Draws of the dead-code replacement; a trainer seeds one (None: torch's global generator).
        self.generator: torch.Generator | None = None
        for i, size in enumerate(self.codebook_sizes):
            self.register_buffer(f"usage_ema_{i}", torch.full((size,), 1.0 / size))

    # ------------------------------------------------------------------ geometry
    @property
    def _c(self) -> float | None:
        """Curvature for the distance kernel; ``None`` means Euclidean."""
        return self.curvature if self.ball is not None else None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp points into the ball as geoopt's ``projx`` does (identity in Euclidean space)."""
        return project(x, self.curvature) if self.ball is not None else x

    def _subtract(self, r: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if self.ball is None:
            return r - e
        if self.residual == "paper":
            return mobius_add(r, -e, self.curvature)
        return mobius_add(-e, r, self.curvature)

    def _distance_sq(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-point squared distance ``[N]`` used in the codebook/commitment loss."""
        if self.loss_distance == "hyperbolic":
            return self.ball.dist(a, b).pow(2)
        return (a - b).pow(2).sum(-1)

    def _reconstruct(self, words: list[torch.Tensor]) -> torch.Tensor:
        """Combine per-level codewords ``[N, dim]`` into the reconstruction: the sum, the left
        fold ``((0 ⊕ e_0) ⊕ e_1) ⊕ ...`` (``"paper"``) or ``e_0 ⊕ (e_1 ⊕ (... ⊕ e_{k-1}))``
        (``"gyro"``)."""
        return combine_codewords(words, self._c, right_nested=self.residual == "gyro")

    # ------------------------------------------------------------------ training-only updates
    @torch.no_grad()
    def _init_level(self, level: int, r: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means (Poincaré k-means on the ball) of level ``level``'s residuals ``r [N, dim]``."""
        centroids = kmeans(r, self.codebook_sizes[level], iters=self.kmeans_iters, curvature=self._c,
                           generator=generator)
        self.codebooks[level].data.copy_(self.project(centroids))

    @torch.no_grad()
    def _replace_dead_codes(self, level: int, r: torch.Tensor, codes: torch.Tensor) -> None:
        """Update level ``level``'s usage average with ``codes [N]`` and move its dead codewords
        onto distinct residuals ``r [N, dim]`` of the batch (:func:`replace_dead_codewords`)."""
        replace_dead_codewords(self.codebooks[level].data, getattr(self, f"usage_ema_{level}"), r, codes,
                               threshold=self.dead_code_threshold, decay=self.usage_decay,
                               project=self.project, generator=self.generator)

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantize ``x [N, dim]`` (points of the ball for Poincaré; projected onto it first).

        Written for any leading shape of codebooks and points alike, so that
        :class:`~hrq.quantize.stacked.StackedResidualQuantizer` runs this same pass on ``[R, N, dim]``
        against codebooks ``[R, s, dim]`` (its loss is then one per run, ``[R]``).
        """
        self._check_input(x)
        x = self.project(x)
        first_batch = self._kmeans_pending()
        r = x
        codes, words, residuals = [], [], []
        loss = x.new_zeros(x.shape[:-2])
        for level, book in enumerate(self.codebooks):
            if first_batch:
                self._init_level(level, r)
            idx = nearest(r.detach(), book, self._c)
            # book[idx] for [s, dim] codebooks, each run's own codewords for [R, s, dim]
            e = book[idx] if book.ndim == 2 else torch.take_along_dim(book, idx.unsqueeze(-1), dim=-2)
            loss = loss + (
                self._distance_sq(r.detach(), e) + self.commitment * self._distance_sq(r, e.detach())
            ).mean(-1)
            if self.training and self.dead_code_threshold > 0:
                self._replace_dead_codes(level, r, idx)
            codes.append(idx)
            words.append(e.detach())
            residuals.append(r)
            if level + 1 < self.levels:  # the last residual r_k is never used
                r = self._subtract(r, e.detach())
        if first_batch:
            self.initialized.fill_(True)
        y = self._reconstruct(words)
        # Straight-through, dy/dx = I: x - sg[x] is exactly zero, so the value is exactly y
        # (already on the ball) and no projection is needed.
        quantized = y + (x - x.detach())
        return QuantizerOutput(torch.stack(codes, -1), quantized, loss, residuals)

    def extra_repr(self) -> str:
        geo = f"geometry={self.geometry}"
        if self.ball is not None:
            geo += f", curvature={self.curvature}, residual={self.residual}"
        return f"{super().extra_repr()}, {geo}"


@torch.no_grad()
def replace_dead_codewords(book: torch.Tensor, ema: torch.Tensor, r: torch.Tensor, codes: torch.Tensor, *,
                           threshold: float, decay: float, project, generator: torch.Generator | None) -> None:
    """Dead-code replacement of one codebook, in place, without reading anything back to the host.

    Updates the usage average ``ema [K]`` with the batch's ``codes [N]``; codewords of ``book [K, dim]``
    whose average falls below ``threshold / K`` move onto distinct residuals ``r [N, dim]`` of the
    batch, the i-th dead codeword onto the i-th point of a random permutation drawn with
    ``generator`` (``project`` puts them on the ball). Dead codewords beyond the batch's ``N``
    wait for the next batch: two codewords on one point would leave one of them dead again.
    Written with masks rather than ``nonzero``, so a training step never waits for the device.
    """
    share = torch.bincount(codes, minlength=ema.numel()).to(ema.dtype) / codes.numel()
    ema.mul_(decay).add_(share, alpha=1 - decay)
    floor = threshold / ema.numel()
    dead = ema < floor
    rank = dead.long().cumsum(0) - 1  # the i-th dead codeword has rank i
    moved = dead & (rank < r.shape[0])
    device = generator.device if generator is not None else r.device
    order = torch.randperm(r.shape[0], generator=generator, device=device).to(r.device)
    target = project(r.detach()[order[rank.clamp(0, r.shape[0] - 1)]])  # [K, dim]
    book.copy_(torch.where(moved.unsqueeze(-1), target, book))
    # at the floor: a moved codeword that wins no point in the next batch moves again
    ema.copy_(torch.where(moved, torch.full_like(ema, floor), ema))
