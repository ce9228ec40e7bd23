"""Quantizers and their diagnostics.

``ResidualQuantizer`` is RQ (Euclidean) and HRQ (Poincaré ball); see its docstring for the
``paper`` and ``gyro`` residual rules. ``HGRecQuantizer``, ``HyperVQQuantizer`` and
``RSQQuantizer`` are the related methods (HG-Rec, HyperVQ, RSQ-VAE); all share
:class:`QuantizerBase`, and :func:`build_quantizer` makes any of them by name.
:func:`usage_heatmap` (in :mod:`hrq.quantize.plots`, loaded on first use so that importing the
quantizers does not import matplotlib) draws per-level codeword usage.
"""

from hrq.quantize.base import (
    AnnealedQuantizer,
    ExponentialTemperature,
    QuantizerBase,
    QuantizerOutput,
    codebook_label,
    combine_codewords,
    level_sizes,
    parse_codebook_label,
)
from hrq.quantize.distance import nearest, nearest_scores
from hrq.quantize.factory import QUANTIZER_KINDS, build_quantizer, quantizer_option_names
from hrq.quantize.hgrec import HGRecQuantizer, pyramid_codebook_sizes
from hrq.quantize.hypervq import HyperVQQuantizer, unidirectional_mlr
from hrq.quantize.kmeans import kmeans
from hrq.quantize.metrics import CodebookStats, codebook_stats, first_token_purity, perplexity
from hrq.quantize.multitoken import append_dedup_token, random_codes
from hrq.quantize.residual import ResidualQuantizer
from hrq.quantize.rsq import RSQQuantizer

__all__ = [
    "QUANTIZER_KINDS",
    "AnnealedQuantizer",
    "CodebookStats",
    "ExponentialTemperature",
    "HGRecQuantizer",
    "HyperVQQuantizer",
    "QuantizerBase",
    "QuantizerOutput",
    "RSQQuantizer",
    "ResidualQuantizer",
    "append_dedup_token",
    "build_quantizer",
    "codebook_label",
    "codebook_stats",
    "combine_codewords",
    "first_token_purity",
    "kmeans",
    "level_sizes",
    "nearest",
    "nearest_scores",
    "parse_codebook_label",
    "perplexity",
    "pyramid_codebook_sizes",
    "quantizer_option_names",
    "random_codes",
    "unidirectional_mlr",
    "usage_heatmap",
]


def __getattr__(name: str):
    if name == "usage_heatmap":
        from hrq.quantize.plots import usage_heatmap

        return usage_heatmap
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
