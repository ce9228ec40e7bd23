"""Figure stages: Figure 1 (metric vs h) from Table 1 cells; Figure 4 (2-D token space)."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from hrq.models import train_vae
from hrq.stages.common import build_vae, device_for, epoch_logger, job_run, seed_everything
from hrq.stages.data import load_vectors
from hrq.tables.aggregate import read_cells
from hrq.tables.render import METHOD_LABELS
from hrq.tables.figures import TokenSpacePanel, plot_recall_vs_h, plot_token_space


def figure_recall_vs_h(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Figure 1 for one dataset from its Table 1 cells at the configured (k, s), with the
    dataset's baselines (``inputs['baseline']``, the methods in ``params['baselines']``) as
    horizontal lines."""
    cells = read_cells(inputs["cells"])
    lines = {}
    if inputs.get("baseline"):
        from hrq.io import read_parquet

        rows = read_parquet(inputs["baseline"])
        recall = rows[rows["metric"] == "recall@10"].set_index("method")["value"]
        lines = {METHOD_LABELS.get(m, m): float(recall[m]) for m in params.get("baselines", []) if m in recall.index}
    plot_recall_vs_h(cells, k=params["k"], s=params["s"], methods=params["methods"],
                     dataset=params["dataset"], path=outputs["png"], baselines=lines)


def figure_token_space(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Figure 4: train 2-D, 2-level RQ-VAE and HRQ-VAE tokenizers on the item embeddings
    (seed ``params['seed']``) and plot their latents coloured by first token, shaded by second."""
    device = device_for(params)
    vectors = load_vectors(inputs["embeddings"]).to(device)
    opts, fig = params["tokenizer"], params["figure4"]
    panels = []
    for name in params["methods"]:
        method = params["method_specs"][name]
        seed_everything(params["seed"])
        model = build_vae(vectors.shape[1], 2, fig["k"], fig["s"], method, opts).to(device)
        run_params = {**params, "tracking": {**params["tracking"], "cell": {**params["tracking"]["cell"], "method": name},
                                             "job_key": f"{params['tracking']['job_key']}#{name}",
                                             "run_name": f"figure4 {name}"}} if params.get("tracking") else params
        with job_run(run_params, {"method": name, "method_spec": method, "figure4": fig, "tokenizer": opts},
                     datasets=inputs) as run:
            train_vae(model, vectors, epochs=fig["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                      seed=params["seed"], kmeans_sample=opts.get("kmeans_sample"),
                      on_epoch=epoch_logger(run, "tokenizer", fig["epochs"], what=name))
        model.eval()
        with torch.no_grad():
            latent = model.to_latent(vectors).cpu().numpy()
            codes = model.encode(vectors).cpu().numpy()
        curvature = model.ball.c.item() if model.ball is not None else None
        panels.append(TokenSpacePanel(METHOD_LABELS.get(name, name), latent, codes[:, 0], codes[:, 1], curvature))
    plot_token_space(panels, outputs["png"])
