"""A minimal, reusable (H)RQ-VAE training loop with progress and per-epoch metrics."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from hrq.models.rqvae import ResidualQuantizedVAE, riemannian_optimizer


@torch.no_grad()
def evaluate_vae(model: ResidualQuantizedVAE, data: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Reconstruction error and codebook diagnostics of ``data [N, d]`` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        recon, codes = 0.0, []
        for start in range(0, data.shape[0], batch_size):
            out = model(data[start : start + batch_size])
            recon += float(out.reconstruction_loss) * out.codes.shape[0]
            codes.append(out.codes)
        stats = model.quantizer.code_stats(torch.cat(codes))
        return {"reconstruction_loss": recon / data.shape[0], **stats.as_dict()}
    finally:
        model.train(was_training)


def train_vae(
    model: ResidualQuantizedVAE,
    data: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` on ``data [N, d]`` with a geoopt Riemannian optimizer.

    Each epoch shuffles with a generator seeded by ``seed``; after each epoch the train-mode
    mean losses and :func:`evaluate_vae` metrics are passed to ``on_epoch(epoch, metrics)``
    (e.g. an MLflow logger) and collected in the returned history.
    """
    opt = riemannian_optimizer(model.parameters(), lr, optimizer)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=f"{model.geometry} VAE", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(data.shape[0], generator=gen).to(data.device)
        total = recon = quant = 0.0
        for start in range(0, data.shape[0], batch_size):
            batch = data[perm[start : start + batch_size]]
            out = model(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            n = batch.shape[0]
            total += float(out.loss.detach()) * n
            recon += float(out.reconstruction_loss.detach()) * n
            quant += float(out.quantizer_loss.detach()) * n
        n = data.shape[0]
        metrics = {"train/loss": total / n, "train/reconstruction_loss": recon / n,
                   "train/quantizer_loss": quant / n}
        metrics.update({f"eval/{k}": v for k, v in evaluate_vae(model, data).items()})
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history
