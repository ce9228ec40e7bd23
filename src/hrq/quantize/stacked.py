"""R independent residual quantizers of one configuration as one module (issue 16).

The seeds of one table cell train the same shapes, so their steps can run as one: every
codebook is stacked on a leading run axis and each kernel (the nearest-codeword GEMM, the
Möbius residuals, the optimizer step) does R runs' work in one launch. Per-step overhead, which
dominates the small Table 1 steps, is then paid once for R runs.

Runs stay independent: run ``r``'s points only meet run ``r``'s codewords, and the per-run losses
are summed for the backward pass, so each run gets exactly its own gradient; geoopt's optimizers
act row by row. What differs from R separate quantizers is only floating-point rounding of the
batched GEMMs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import geoopt
import torch
from torch import nn

from hrq.quantize.base import QuantizerOutput
from hrq.quantize.residual import ResidualQuantizer, replace_dead_codewords

__all__ = ["MemberQuantizers", "StackedResidualQuantizer", "stack_quantizers", "stackable"]

# What two ResidualQuantizers must share to train as one stack.
_SHARED = ("levels", "codebook_sizes", "dim", "geometry", "curvature", "residual", "commitment",
           "loss_distance", "dead_code_threshold", "usage_decay")


def stackable(quantizers: Sequence[nn.Module]) -> bool:
    """Whether these quantizers can train as one :class:`StackedResidualQuantizer`: all of them
    plain :class:`~hrq.quantize.ResidualQuantizer` (not a subclass) of one configuration."""
    if not quantizers or any(type(q) is not ResidualQuantizer for q in quantizers):
        return False
    first = quantizers[0]
    return all(getattr(q, key) == getattr(first, key) for q in quantizers for key in _SHARED)


class StackedResidualQuantizer(ResidualQuantizer):
    """R :class:`~hrq.quantize.ResidualQuantizer` members trained as one.

    Codebook ``l`` is one parameter ``[R, s_l, dim]``; the forward pass is the members' own
    (:meth:`ResidualQuantizer.forward`, written for any leading shape) on ``x [R, N, dim]``,
    giving codes ``[R, N, k]``, quantized ``[R, N, dim]`` and per-run losses ``[R]``. Dead-code
    replacement runs per member with that member's ``generator``.

    The members are kept (not as submodules): :meth:`load_members` copies their codebooks and
    usage averages in, :meth:`write_back` copies them out, so everything outside the training
    steps (k-means init, codes, statistics, state dicts, outputs) stays the single-run code.

    Args:
        members: quantizers of one configuration (see :func:`stackable`).
    """

    def __init__(self, members: Sequence[ResidualQuantizer]) -> None:
        if not stackable(members):
            raise ValueError("stacked quantizers must all be plain ResidualQuantizers of one configuration "
                             f"({', '.join(_SHARED)}); got {[type(q).__name__ for q in members]}")
        first = members[0]
        super().__init__(first.levels, first.codebook_sizes, first.dim, geometry=first.geometry,
                         curvature=first.curvature, residual=first.residual, commitment=first.commitment,
                         loss_distance=first.loss_distance, kmeans_init=False,
                         dead_code_threshold=first.dead_code_threshold, usage_decay=first.usage_decay)
        self.runs = len(members)
        self._members = tuple(members)  # a tuple: not registered, their parameters stay theirs
        manifold = self.ball if self.ball is not None else geoopt.Euclidean()
        self.codebooks = nn.ParameterList(
            geoopt.ManifoldParameter(torch.stack([q.codebooks[level].detach() for q in members]), manifold=manifold)
            for level in range(self.levels))
        for level, size in enumerate(self.codebook_sizes):
            self.register_buffer(f"usage_ema_{level}", torch.stack([getattr(q, f"usage_ema_{level}") for q in members]))
        self.to(first.codebooks[0].device)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[0] != self.runs or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape [{self.runs}, N, {self.dim}], got {tuple(x.shape)}")

    @torch.no_grad()
    def _replace_dead_codes(self, level: int, r: torch.Tensor, codes: torch.Tensor) -> None:
        book, ema = self.codebooks[level].data, getattr(self, f"usage_ema_{level}")
        for run, member in enumerate(self._members):
            replace_dead_codewords(book[run], ema[run], r[run], codes[run], threshold=self.dead_code_threshold,
                                   decay=self.usage_decay, project=self.project, generator=member.generator)

    @torch.no_grad()
    def load_members(self) -> None:
        """Copy the members' codebooks and usage averages into the stack (e.g. after their k-means init)."""
        for level in range(self.levels):
            self.codebooks[level].data.copy_(torch.stack([q.codebooks[level].detach() for q in self._members]))
            getattr(self, f"usage_ema_{level}").copy_(
                torch.stack([getattr(q, f"usage_ema_{level}") for q in self._members]))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each run's codebooks and usage averages into its member."""
        for level in range(self.levels):
            for run, q in enumerate(self._members):
                q.codebooks[level].data.copy_(self.codebooks[level].data[run])
                getattr(q, f"usage_ema_{level}").copy_(getattr(self, f"usage_ema_{level}")[run])

    def extra_repr(self) -> str:
        return f"runs={self.runs}, {super().extra_repr()}"


def _default_generator(device: torch.device) -> torch.Generator | None:
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return None


@contextmanager
def _global_stream(generator: torch.Generator | None) -> Iterator[None]:
    """Within the block torch's global generator of ``generator``'s device draws from
    ``generator``'s stream (which then continues where the block left it); ``None``, or a device
    without a default generator here: unchanged."""
    default = None if generator is None else _default_generator(generator.device)
    if default is None:
        yield
        return
    saved = default.get_state()
    default.set_state(generator.get_state())
    try:
        yield
    finally:
        generator.set_state(default.get_state())
        default.set_state(saved)


class MemberQuantizers(nn.Module):
    """Quantizers that do not stack (HyperVQ, RSQ, HG-Rec, or RQs of differing options), run one
    after another on their run's points: ``x [R, N, dim]`` -> the members' outputs stacked (codes
    ``[R, N, k]``, quantized ``[R, N, dim]``, losses ``[R]``, residuals ``[R, N, dim]``).

    They draw from torch's global generator (the Gumbel noise of HyperVQ and RSQ), which R
    members would share; so that each run draws what it would draw alone, member ``r`` runs with
    the global generator set to its own stream, ``generators[r]`` (``None``: the global one).
    """

    def __init__(self, members: Sequence[nn.Module], generators: Sequence[torch.Generator] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)  # registered: the stack's optimizer trains them
        self.generators = list(generators) if generators is not None else [None] * len(members)

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        outs = []
        for run, q in enumerate(self.members):
            with _global_stream(self.generators[run]):
                outs.append(q(x[run]))
        return QuantizerOutput(torch.stack([o.codes for o in outs]), torch.stack([o.quantized for o in outs]),
                               torch.stack([o.loss for o in outs]),
                               [torch.stack(level) for level in zip(*(o.residuals for o in outs))])

    def load_members(self) -> None:
        """Nothing to copy: the members' modules are the trained ones."""

    def write_back(self) -> None:
        """Nothing to copy: the members' modules are the trained ones."""


def stack_quantizers(quantizers: Sequence[nn.Module],
                     generators: Sequence[torch.Generator] | None = None) -> StackedResidualQuantizer | MemberQuantizers:
    """R quantizers as one module on ``x [R, N, dim]``: a :class:`StackedResidualQuantizer` when
    they :func:`stackable`, else :class:`MemberQuantizers` (``generators`` as there). Either has
    ``load_members``/``write_back``."""
    return StackedResidualQuantizer(quantizers) if stackable(quantizers) else MemberQuantizers(quantizers, generators)
