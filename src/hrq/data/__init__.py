"""Datasets: built-in synthetic data (readers for WordNet, MovieLens, Amazon arrive with #4/#5)."""

from hrq.data.synthetic import (
    SyntheticCatalog,
    SyntheticHierarchy,
    SyntheticTaxonomy,
    make_catalog,
    make_hierarchy,
    make_taxonomy,
    transitive_closure,
)

__all__ = [
    "SyntheticCatalog",
    "SyntheticHierarchy",
    "SyntheticTaxonomy",
    "make_catalog",
    "make_hierarchy",
    "make_taxonomy",
    "transitive_closure",
]
