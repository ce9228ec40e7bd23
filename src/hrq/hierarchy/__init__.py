"""Hierarchy modelling (HRQ paper §4.1): node embedding + (H)RQ tokenizer, hypernym generation."""

from hrq.hierarchy.tokenizer import (
    HierarchyTokenizer,
    RelationSampler,
    TokenizerStack,
    ranking_metrics,
    train_hierarchy_tokenizer,
    train_hierarchy_tokenizers,
)

__all__ = ["HierarchyTokenizer", "RelationSampler", "TokenizerStack", "ranking_metrics", "train_hierarchy_tokenizer",
           "train_hierarchy_tokenizers"]
