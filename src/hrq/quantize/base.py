"""What the k-level quantizers share: output type, codebook sizes, shape checks, decoding,
k-means-init state and the Gumbel-softmax temperature.

:class:`QuantizerBase` is the interface :class:`~hrq.models.rqvae.ResidualQuantizedVAE` and
:func:`~hrq.models.training.train_vae` rely on (``levels``, ``codebook_sizes``, ``dim``,
``geometry``, ``forward -> QuantizerOutput``, ``encode``, ``decode``, ``code_stats``).
:class:`AnnealedQuantizer` adds the temperature of the stochastic quantizers (HyperVQ, RSQ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hrq.checks import require_finite
from hrq.grid import codebook_label, level_sizes, parse_codebook_label
from hrq.manifold import mobius_add
from hrq.quantize.metrics import CodebookStats, codebook_stats

Geometry = Literal["euclidean", "poincare"]

__all__ = [
    "AnnealedQuantizer",
    "ExponentialTemperature",
    "Geometry",
    "QuantizerBase",
    "QuantizerOutput",
    "codebook_label",
    "combine_codewords",
    "level_sizes",
    "parse_codebook_label",
]


@dataclass
class QuantizerOutput:
    """Result of a quantizer's forward pass.

    Attributes:
        codes: ``LongTensor [N, levels]``, the token of each level.
        quantized: ``[N, dim]`` reconstruction; how its gradient reaches the input depends on the
            quantizer (straight-through for the deterministic ones).
        loss: scalar quantizer loss (e.g. codebook + commitment summed over levels), averaged
            over points.
        residuals: the ``levels`` residuals ``r_i`` that were quantized, each ``[N, dim]``.
    """

    codes: torch.Tensor
    quantized: torch.Tensor
    loss: torch.Tensor
    residuals: list[torch.Tensor]


def combine_codewords(
    words: Sequence[torch.Tensor], curvature: float | None = None, *, right_nested: bool = False
) -> torch.Tensor:
    """Reconstruction ``[N, dim]`` from the per-level codewords (each ``[N, dim]``).

    ``curvature=None``: the sum ``Σ_i e_i`` (Euclidean or tangent-space codewords). Otherwise
    Möbius addition on the ball of that curvature: the left fold ``((e_0 ⊕ e_1) ⊕ ...) ⊕ e_{k-1}``
    (HRQ's Algorithm 1), or with ``right_nested`` ``e_0 ⊕ (e_1 ⊕ (... ⊕ e_{k-1}))``.
    """
    if curvature is None:
        return torch.stack(list(words)).sum(0)
    if not right_nested:
        y = words[0]
        for e in words[1:]:
            y = mobius_add(y, e, curvature)
        return y
    y = words[-1]
    for e in reversed(words[:-1]):
        y = mobius_add(e, y, curvature)
    return y


class QuantizerBase(nn.Module):
    """Shared part of the k-level quantizers.

    Attributes:
        levels: number of codebooks ``k`` (tokens per multitoken).
        codebook_sizes: codewords per level (``list[int]``).
        dim: dimension of the quantized vectors.
        geometry: where inputs and outputs live: ``"euclidean"`` (``R^dim``, Euclidean or
            tangent vectors) or ``"poincare"`` (points of the Poincaré ball).
        tangent_ball: for Euclidean inputs that are tangent vectors at the ball's origin and
            compared by that ball's distance after ``exp0`` (HG-Rec), the ball; else ``None``.
            A model around the quantizer measures its own distances the same way.

    Subclasses implement ``forward(x) -> QuantizerOutput`` and either keep ``codebooks`` (an
    ``nn.ParameterList``) or override :meth:`codewords`; :meth:`decode` combines the looked-up
    codewords with :meth:`_reconstruct` (the sum, unless overridden). Those with a
    data-dependent init implement :meth:`_init_level`, which :meth:`init_from` runs level by
    level on the data's residuals.
    """

    geometry: str = "euclidean"

    @property
    def tangent_ball(self):
        return None  # a property, not a class attribute: nn.Module keeps submodules in _modules

    def __init__(self, levels: int, codebook_size: int | Sequence[int], dim: int) -> None:
        super().__init__()
        self.codebook_sizes = level_sizes(levels, codebook_size)
        self.levels = levels
        self.dim = dim

    # ------------------------------------------------------------------ checks
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape [N, {self.dim}], got {tuple(x.shape)}")
        # In eval mode a NaN row would get a valid-looking code (the argmin of NaN distances is
        # 0). Training steps are not checked here, as that would synchronise the device every
        # step; a non-finite input makes their loss non-finite, which stops the training loop
        # (hrq.checks.LossMonitor), and k-means samples are checked where they are drawn.
        if not self.training:
            require_finite(x, f"{type(self).__name__} input")

    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.ndim != 2 or codes.shape[-1] != self.levels:
            raise ValueError(f"expected codes of shape [N, {self.levels}], got {tuple(codes.shape)}")

    # ------------------------------------------------------------------ k-means init state
    def _setup_kmeans_init(self, enabled: bool, iters: int) -> None:
        """Store the k-means-init options and the ``initialized`` buffer (saved in the state dict)."""
        self.kmeans_init = enabled
        self.kmeans_iters = iters
        self.register_buffer("initialized", torch.tensor(not enabled))

    def _kmeans_pending(self) -> bool:
        """Whether this forward pass is the first training batch of a k-means-initialised
        quantizer (reads the buffer, i.e. synchronises, only in that case)."""
        return self.training and self.kmeans_init and not bool(self.initialized)

    def _init_level(self, level: int, r: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set level ``level``'s codebook from that level's residuals ``r [N, dim]`` (k-means in
        the quantizer's geometry); quantizers with a data-dependent init override it."""
        raise NotImplementedError(f"{type(self).__name__} has no data-dependent codebook init")

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
        """Initialise every codebook from the data ``x [N, dim]``, level by level.

        Level ``l`` is set by :meth:`_init_level` (k-means in the quantizer's geometry) on the
        residuals of ``x`` after levels ``< l``, which are already initialised; the residuals are
        those of an eval-mode forward pass, i.e. exactly what the quantizer itself computes
        (projection onto the ball, Möbius or tangent subtraction, nearest-codeword choice).
        ``x`` should be many more points than codewords (e.g. the latents of all items): with
        only a training batch, a level gets at most that many distinct codewords, and every
        point that becomes a centroid leaves a zero residual for the next level.

        Marks the quantizer initialised, so a k-means-init quantizer then skips its first-batch
        init. ``generator``: CPU generator of the k-means++ draws (``None``: torch's global one).
        """
        self._check_input(x)
        was_training = self.training
        self.eval()
        try:
            for level in range(self.levels):
                # k eval passes (one per level) instead of a per-kind residual loop: cheap
                # against training, and by construction the residuals the forward pass sees
                r = self(x).residuals[level]
                self._init_level(level, r.detach(), generator)
        finally:
            self.train(was_training)
        if hasattr(self, "initialized"):
            self.initialized.fill_(True)

    # ------------------------------------------------------------------ decoding
    def codewords(self, level: int) -> torch.Tensor:
        """Level ``level``'s codewords ``[K_level, dim]`` (``codebooks[level]`` by default)."""
        return self.codebooks[level]

    def _reconstruct(self, words: list[torch.Tensor]) -> torch.Tensor:
        """Combine per-level codewords ``[N, dim]`` into the reconstruction (their sum)."""
        return combine_codewords(words)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``[N, dim]`` from ``codes [N, levels]`` alone."""
        self._check_codes(codes)
        return self._reconstruct([self.codewords(i)[codes[:, i]] for i in range(self.levels)])

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, levels]`` of ``x [N, dim]`` by an eval-mode pass: deterministic, and the
        parameters, k-means state and temperature step stay untouched (any mode)."""
        was_training = self.training
        self.eval()
        try:
            return self(x).codes
        finally:
            self.train(was_training)

    def code_stats(self, codes: torch.Tensor) -> CodebookStats:
        """Per-level usage and perplexity, and multitoken collisions, of ``codes [N, levels]``."""
        return codebook_stats(codes, self.codebook_sizes)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codebook_sizes={self.codebook_sizes}, dim={self.dim}"


class ExponentialTemperature(nn.Module):
    """Gumbel-softmax temperature per training step: ``τ(t) = max(minimum, start e^{-rate t})``.

    HyperVQ's ``max(τ_max δ^t, τ_min)`` is ``start=τ_max, rate=-ln δ, minimum=τ_min``; HQ-VAE's
    ``max(c_τ, exp(-r t))`` is ``start=1, rate=r, minimum=c_τ``. The step is a Python int, so
    reading ``value`` never synchronises with an accelerator; it is saved in the state dict.
    """

    def __init__(self, start: float, rate: float, minimum: float) -> None:
        super().__init__()
        if not start > 0 or rate < 0 or minimum < 0:
            raise ValueError(f"need start > 0, rate >= 0, minimum >= 0; got {start}, {rate}, {minimum}")
        self.start, self.rate, self.minimum = float(start), float(rate), float(minimum)
        self.step = 0

    @property
    def value(self) -> float:
        """The temperature at the current step."""
        return max(self.minimum, self.start * math.exp(-self.rate * self.step))

    def set_step(self, step: int) -> None:
        """Jump to training step ``step`` (e.g. when resuming)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self.step = int(step)

    def get_extra_state(self) -> dict[str, Any]:
        return {"step": self.step}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])

    def extra_repr(self) -> str:
        return f"start={self.start}, rate={self.rate}, minimum={self.minimum}, step={self.step}"


class AnnealedQuantizer(QuantizerBase):
    """A quantizer whose training passes draw codes by Gumbel-softmax at an annealed temperature.

    Subclasses set ``self.temperature_schedule`` (an :class:`ExponentialTemperature`). The step
    counts training-mode forward passes: each one reads :attr:`temperature` and then calls
    :meth:`_advance_step`, so a training loop that runs one training forward per optimizer step
    needs no :meth:`set_step` call (calling it too would count twice); :meth:`set_step` is for
    resuming or for other schedules. Eval-mode passes take the argmax, without noise, and leave
    the step alone.
    """

    temperature_schedule: ExponentialTemperature

    @property
    def temperature(self) -> float:
        """The Gumbel-softmax temperature ``τ`` the next training pass uses."""
        return self.temperature_schedule.value

    @property
    def step(self) -> int:
        """The annealing step: training-mode forward passes so far (or as set)."""
        return self.temperature_schedule.step

    def set_step(self, step: int) -> None:
        """Set the annealing step (training passes advance it by one each)."""
        self.temperature_schedule.set_step(step)

    def _advance_step(self) -> None:
        if self.training:
            self.temperature_schedule.step += 1

    def _choose(
        self, logits: torch.Tensor, book: torch.Tensor, tau: float, *, straight_through: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[N]`` and codewords ``[N, dim]`` of one level from ``logits [N, K]``.

        Training: ``soft = softmax((logits + g) / τ)`` with Gumbel noise ``g`` and codes its
        argmax; the codeword is the relaxed ``soft @ book``, or with ``straight_through`` exactly
        ``book[code]`` carrying the gradient of ``soft @ book``. Eval: the argmax of the logits
        and its codeword.
        """
        if not self.training:
            idx = logits.argmax(-1)
            return idx, book[idx]
        soft = F.gumbel_softmax(logits, tau=tau)
        idx = soft.argmax(-1)
        if straight_through:
            # soft - sg[soft] is exactly 0, so the value is exactly book[idx]
            return idx, book[idx] + (soft - soft.detach()) @ book
        return idx, soft @ book
