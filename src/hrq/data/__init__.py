"""Datasets: the synthetic taxonomy (more readers arrive with the pipeline stages)."""

from hrq.data.synthetic import SyntheticTaxonomy, make_taxonomy

__all__ = ["SyntheticTaxonomy", "make_taxonomy"]
