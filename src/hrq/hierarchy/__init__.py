"""Hierarchy modelling (HRQ paper §4.1): node embedding + (H)RQ tokenizer, hypernym generation."""

from hrq.hierarchy.tokenizer import (
    HierarchyTokenizer,
    RelationSampler,
    ranking_metrics,
    train_hierarchy_tokenizer,
)

__all__ = ["HierarchyTokenizer", "RelationSampler", "ranking_metrics", "train_hierarchy_tokenizer"]
