"""A minimal, reusable (H)RQ-VAE training loop with progress and per-epoch metrics."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from hrq.models.rqvae import ResidualQuantizedVAE, riemannian_optimizer


@torch.no_grad()
def evaluate_vae(model: ResidualQuantizedVAE, data: torch.Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Reconstruction error (the mean per-point :meth:`~ResidualQuantizedVAE.reconstruction_error`)
    and codebook diagnostics of ``data [N, d]`` in eval mode.

    The codebook diagnostics are those of :meth:`~hrq.quantize.QuantizerBase.code_stats` over
    all ``N`` items at once, including ``collision_rate`` (share of items whose whole multitoken
    is shared with an earlier item).
    """
    was_training = model.training
    model.eval()
    try:
        recon, codes = 0.0, []
        for start in range(0, data.shape[0], batch_size):
            batch = data[start : start + batch_size]
            out = model(batch)
            # per-point errors, so that the metric is the same for every reconstruction loss
            recon += float(model.reconstruction_error(batch, out.reconstruction).sum())
            codes.append(out.codes)
        stats = model.quantizer.code_stats(torch.cat(codes))
        return {"reconstruction_loss": recon / data.shape[0], **stats.as_dict()}
    finally:
        model.train(was_training)


def _annealed(quantizer) -> bool:
    return hasattr(quantizer, "set_step") and hasattr(quantizer, "step")


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

    Each epoch shuffles with a generator seeded by ``seed``; after each epoch the metrics are
    passed to ``on_epoch(epoch, metrics)`` (``epoch`` counts from 0; e.g. an MLflow logger) and
    collected in the returned history (one dict per epoch):

    * ``train/loss``, ``train/reconstruction_loss``, ``train/quantizer_loss``: train-mode means;
    * ``train/epoch_seconds``: wall-clock seconds of the epoch's training pass (evaluation
      excluded);
    * ``train/temperature``: for quantizers with a Gumbel-softmax temperature (HyperVQ, RSQ),
      the temperature the next training pass would use;
    * ``eval/...``: :func:`evaluate_vae` over all items, e.g. ``eval/reconstruction_loss`` and
      ``eval/collision_rate`` (whole multitokens); :func:`collision_summary` finds its minimum.

    Annealing: quantizers with ``set_step``/``step`` (:class:`~hrq.quantize.AnnealedQuantizer`)
    anneal by one step per optimizer step. HyperVQ and RSQ advance their step themselves on each
    training-mode forward pass, which is exactly one per optimizer step here, so the loop only
    calls ``set_step`` for a quantizer whose step did not move in a forward pass (never counting
    twice).
    """
    opt = riemannian_optimizer(model.parameters(), lr, optimizer)
    gen = torch.Generator().manual_seed(seed)
    quantizer = model.quantizer
    anneal = _annealed(quantizer)
    history: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=f"{model.geometry} VAE", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        start_time = time.perf_counter()
        perm = torch.randperm(data.shape[0], generator=gen).to(data.device)
        total = recon = quant = 0.0
        for start in range(0, data.shape[0], batch_size):
            batch = data[perm[start : start + batch_size]]
            step = quantizer.step if anneal else 0
            out = model(batch)
            if anneal and quantizer.step == step:
                quantizer.set_step(step + 1)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            n = batch.shape[0]
            total += float(out.loss.detach()) * n
            recon += float(out.reconstruction_loss.detach()) * n
            quant += float(out.quantizer_loss.detach()) * n
        seconds = time.perf_counter() - start_time  # the float() reads above synchronise
        n = data.shape[0]
        metrics = {"train/loss": total / n, "train/reconstruction_loss": recon / n,
                   "train/quantizer_loss": quant / n, "train/epoch_seconds": seconds}
        if hasattr(quantizer, "temperature"):
            metrics["train/temperature"] = float(quantizer.temperature)
        metrics.update({f"eval/{k}": v for k, v in evaluate_vae(model, data).items()})
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history


def collision_summary(
    history: Sequence[dict[str, float]], key: str = "eval/collision_rate"
) -> dict[str, float | int]:
    """The minimum collision rate over a :func:`train_vae` history and when it was reached.

    Returns ``min_collision_rate``; ``best_collision_epoch``, the first epoch (0-based, as
    passed to ``on_epoch``) reaching it; and ``epochs_to_min_collision = best_collision_epoch + 1``,
    the number of training epochs needed to reach it (HG-Rec Fig. 4/5). NaN values are skipped.
    """
    rates = [(i, float(h[key])) for i, h in enumerate(history) if key in h]
    rates = [(i, r) for i, r in rates if not math.isnan(r)]
    if not rates:
        raise ValueError(f"no {key!r} values in the history ({len(history)} epochs)")
    best, rate = min(rates, key=lambda ir: (ir[1], ir[0]))
    return {"min_collision_rate": rate, "best_collision_epoch": best,
            "epochs_to_min_collision": best + 1}
