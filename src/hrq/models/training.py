"""A minimal, reusable (H)RQ-VAE training loop with progress and per-epoch metrics."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from hrq.checks import LossMonitor, require_finite
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


def min_kmeans_sample(codebook_sizes: Sequence[int]) -> int:
    """The fewest items a k-means codebook init may sample: ``max(1024, 16 · largest level)``.

    With 16 points per codeword k-means has clusters to average rather than single points,
    whose zero residuals would leave the next level nothing to cluster.
    """
    return max(1024, 16 * max(codebook_sizes))


@torch.no_grad()
def init_codebooks(
    model: ResidualQuantizedVAE,
    data: torch.Tensor,
    *,
    sample: int | None = None,
    seed: int = 0,
    batch_size: int = 4096,
) -> int:
    """Initialise the VAE's quantizer from the encoder's latents of the data (before training).

    Level ``l`` gets k-means in the quantizer's geometry on the sample's residuals after levels
    ``< l`` (:meth:`~hrq.quantize.QuantizerBase.init_from`), instead of on the first training
    batch, which gives a level at most a batch of distinct codewords and the next level the
    zero residuals of every point that became a centroid (issue 13).

    Args:
        data: items ``[N, d]``.
        sample: ``None``: all ``N`` items; an int: a sample of that many items drawn with
            ``seed`` (all of them when ``N`` is smaller), at least :func:`min_kmeans_sample`.
        seed: seed of the sample and of the k-means++ draws.
        batch_size: items per encoder pass (bounds memory, not the result).

    Returns:
        the number of items the codebooks were initialised from.
    """
    quantizer = model.quantizer
    if sample is not None and sample < min_kmeans_sample(quantizer.codebook_sizes):
        raise ValueError(f"a k-means init sample of {sample} items is too small for codebooks of "
                         f"{list(quantizer.codebook_sizes)}: use at least "
                         f"{min_kmeans_sample(quantizer.codebook_sizes)} (or all items)")
    gen = torch.Generator().manual_seed(seed)
    n = data.shape[0]
    if sample is not None and sample < n:
        data = data[torch.randperm(n, generator=gen)[:sample].to(data.device)]
    was_training = model.training
    model.eval()
    try:
        latents = torch.cat([model.to_latent(data[i : i + batch_size]) for i in range(0, data.shape[0], batch_size)])
        quantizer.init_from(latents, generator=gen)
    finally:
        model.train(was_training)
    return latents.shape[0]


def train_vae(
    model: ResidualQuantizedVAE,
    data: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    kmeans_sample: int | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` on ``data [N, d]`` with a geoopt Riemannian optimizer.

    Codebook init: a quantizer with ``kmeans_init`` that is not yet initialised gets its
    codebooks from :func:`init_codebooks` before the first step: k-means per level on the
    latents of all items (``kmeans_sample=None``) or of a seeded sample of ``kmeans_sample``
    items; ``kmeans_sample=0`` leaves it to the quantizer's first training batch (the
    TIGER-style init that issue 13 measured collapsing). Other quantizers start as built.

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
    quantizer = model.quantizer
    require_finite(data, "train_vae data")  # once: the steps are not checked one by one
    if kmeans_sample is not None and kmeans_sample < 0:
        raise ValueError(f"kmeans_sample must be None (all items), 0 (first batch) or > 0, got {kmeans_sample}")
    if getattr(quantizer, "kmeans_init", False) and not bool(quantizer.initialized) and kmeans_sample != 0:
        init_codebooks(model, data, sample=kmeans_sample, seed=seed)
    opt = riemannian_optimizer(model.parameters(), lr, optimizer)
    gen = torch.Generator().manual_seed(seed)
    anneal = _annealed(quantizer)
    history: list[dict[str, float]] = []
    monitor = LossMonitor()
    bar = tqdm(range(epochs), desc=f"{model.geometry} VAE", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        start_time = time.perf_counter()
        perm = torch.randperm(data.shape[0], generator=gen).to(data.device)
        # Loss sums stay on the device, read once per epoch (a float() per step synchronises).
        sums = torch.zeros(3, device=data.device)
        monitor.start_epoch(epoch)
        for step_index, start in enumerate(range(0, data.shape[0], batch_size)):
            batch = data[perm[start : start + batch_size]]
            step = quantizer.step if anneal else 0
            out = model(batch)
            if anneal and quantizer.step == step:
                quantizer.set_step(step + 1)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            monitor.observe(out.loss, step_index)
            sums += torch.stack([out.loss.detach(), out.reconstruction_loss.detach(),
                                 out.quantizer_loss.detach()]) * batch.shape[0]
        total, recon, quant = (sums / data.shape[0]).tolist()  # synchronises: the epoch's work is done
        seconds = time.perf_counter() - start_time
        monitor.check()  # a diverged epoch stops training before it is reported or written
        metrics = {"train/loss": total, "train/reconstruction_loss": recon,
                   "train/quantizer_loss": quant, "train/epoch_seconds": seconds}
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
