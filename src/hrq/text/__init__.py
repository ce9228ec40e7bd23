"""Item text for the recommendation datasets.

* :mod:`hrq.text.descriptions` — MovieLens descriptions written by an LLM (Anthropic SDK),
  cached per (movie, model, prompt hash); a ``template`` backend for runs without an API key.
* :mod:`hrq.text.embeddings` — sentence-transformers embeddings (MPNet) and the offline
  assembly of all-mpnet-base-v2 from its PyPI parts.

Submodules are imported on use: torch/transformers and the Anthropic SDK are heavy.
"""
