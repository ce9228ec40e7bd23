"""Build a quantizer by name, as the pipeline configuration names it.

=================  ========================================================================
kind               quantizer
=================  ========================================================================
``rq``             :class:`~hrq.quantize.residual.ResidualQuantizer`, ``geometry="euclidean"``
``hrq``            :class:`~hrq.quantize.residual.ResidualQuantizer`, ``geometry="poincare"``
``hgrec``          :class:`~hrq.quantize.hgrec.HGRecQuantizer` (tangent space, Euclidean I/O)
``hypervq``        :class:`~hrq.quantize.hypervq.HyperVQQuantizer`, ``geometry="euclidean"``
``hypervq_hrq``    :class:`~hrq.quantize.hypervq.HyperVQQuantizer`, ``geometry="poincare"``
                   (HRQ residuals on the ball with HyperVQ's MLR codeword choice)
``rsq``            :class:`~hrq.quantize.rsq.RSQQuantizer` (Euclidean)
=================  ========================================================================

The options of a kind are the keyword-only arguments of its class, less the geometry the kind
fixes (``rq`` also drops the Poincaré-only ``curvature``, ``residual`` and ``loss_distance``);
:func:`quantizer_option_names` lists them. The resulting module's ``geometry`` says where its
inputs and outputs live, which is the geometry a
:class:`~hrq.models.rqvae.ResidualQuantizedVAE` around it needs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Sequence

from torch import nn

from hrq.quantize.hgrec import HGRecQuantizer
from hrq.quantize.hypervq import HyperVQQuantizer
from hrq.quantize.residual import ResidualQuantizer
from hrq.quantize.rsq import RSQQuantizer

__all__ = ["QUANTIZER_KINDS", "build_quantizer", "quantizer_option_names"]


@dataclass(frozen=True)
class _Kind:
    cls: type[nn.Module]
    fixed: dict[str, Any] = field(default_factory=dict)
    excluded: frozenset[str] = frozenset()

    def option_names(self) -> tuple[str, ...]:
        params = inspect.signature(self.cls.__init__).parameters.values()
        return tuple(sorted(
            p.name for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in self.fixed and p.name not in self.excluded
        ))


_KINDS: dict[str, _Kind] = {
    "rq": _Kind(ResidualQuantizer, {"geometry": "euclidean"},
                frozenset({"curvature", "residual", "loss_distance"})),
    "hrq": _Kind(ResidualQuantizer, {"geometry": "poincare"}),
    "hgrec": _Kind(HGRecQuantizer),
    "hypervq": _Kind(HyperVQQuantizer, {"geometry": "euclidean"}),
    "hypervq_hrq": _Kind(HyperVQQuantizer, {"geometry": "poincare"}),
    "rsq": _Kind(RSQQuantizer),
}

QUANTIZER_KINDS: tuple[str, ...] = tuple(_KINDS)
"""The kinds :func:`build_quantizer` knows, in table order."""


def _kind(kind: str) -> _Kind:
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in QUANTIZER_KINDS)
        raise ValueError(f"unknown quantizer kind {kind!r}; known kinds: {known}") from None


def quantizer_option_names(kind: str) -> tuple[str, ...]:
    """The keyword options :func:`build_quantizer` accepts for ``kind`` (sorted)."""
    return _kind(kind).option_names()


def build_quantizer(
    kind: str,
    levels: int | None,
    codebook_size: int | Sequence[int],
    dim: int,
    **options: Any,
) -> nn.Module:
    """A ``levels``-level quantizer of ``dim``-dimensional vectors of the given ``kind``.

    Args:
        kind: one of :data:`QUANTIZER_KINDS` (module doc).
        levels: number of codebooks; ``None`` takes it from a per-level ``codebook_size`` list.
        codebook_size: codewords per level, an int or one int per level (e.g. HG-Rec's
            ``[64, 128, 256]``).
        dim: dimension of the quantized vectors (the VAE's latent dimension).
        **options: keyword options of the kind's class (:func:`quantizer_option_names`), e.g.
            ``commitment``, ``kmeans_init``, ``curvature``, ``temperature_decay``. ``geometry``
            is fixed by the kind and may only be repeated with that value.

    Raises:
        ValueError: an unknown kind (the message lists the known ones), an option the kind does
            not accept (the message lists those it does), ``geometry`` other than the kind's, or
            invalid sizes and values (from the quantizer).
    """
    spec = _kind(kind)
    if levels is None:
        if isinstance(codebook_size, int):
            raise ValueError("levels=None needs codebook_size as one int per level")
        levels = len(codebook_size)
    for name, value in spec.fixed.items():
        if name in options:
            given = options.pop(name)
            if given != value:
                others = ", ".join(repr(k) for k, s in _KINDS.items()
                                   if s.cls is spec.cls and s.fixed.get(name) == given)
                hint = f"use kind {others}" if others else "pick another kind"
                raise ValueError(
                    f"quantizer kind {kind!r} fixes {name}={value!r}, got {name}={given!r}; {hint}"
                )
    accepted = spec.option_names()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"quantizer kind {kind!r} does not accept option(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted)}"
        )
    return spec.cls(levels, codebook_size, dim, **spec.fixed, **options)
