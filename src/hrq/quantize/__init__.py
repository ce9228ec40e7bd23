"""Quantizers and their diagnostics.

``ResidualQuantizer`` is RQ (Euclidean) and HRQ (Poincaré ball); see its docstring for the
``paper`` and ``gyro`` residual rules.
"""

from hrq.quantize.distance import nearest, nearest_scores
from hrq.quantize.kmeans import kmeans
from hrq.quantize.metrics import CodebookStats, codebook_stats, first_token_purity, perplexity
from hrq.quantize.multitoken import append_dedup_token, random_codes
from hrq.quantize.residual import QuantizerOutput, ResidualQuantizer

__all__ = [
    "CodebookStats",
    "QuantizerOutput",
    "ResidualQuantizer",
    "append_dedup_token",
    "codebook_stats",
    "first_token_purity",
    "kmeans",
    "nearest",
    "nearest_scores",
    "perplexity",
    "random_codes",
]
