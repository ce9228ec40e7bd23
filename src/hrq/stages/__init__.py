"""Pipeline stages as plain functions ``stage(inputs, outputs, params)`` that only write files.

Snakemake rules call them through ``python -m hrq.stages <stage> --job '<json>'``; a notebook
can import and call them directly:

* :mod:`hrq.stages.data`: ``prepare_data``, ``embed_items``
* :mod:`hrq.stages.tokenize`: ``tokenize_hierarchy``, ``tokenize_items``
* :mod:`hrq.stages.downstream`: ``hypernym_generation``, ``recommendation``
* :mod:`hrq.stages.report`: ``aggregate_cell``, ``render_table``, ``dataset_table``
* :mod:`hrq.stages.figures`: ``figure_recall_vs_h``, ``figure_token_space``

This package imports nothing heavy itself, so the CLI starts by loading only the stage it runs.
"""
