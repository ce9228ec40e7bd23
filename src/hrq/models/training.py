"""A minimal, reusable (H)RQ-VAE training loop with progress and per-epoch metrics; the seeds of
one cell train as one stack (:func:`train_vaes`), one run is a stack of one (:func:`train_vae`)."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from hrq.checks import LossMonitor, require_finite
from hrq.models.rqvae import ResidualQuantizedVAE, riemannian_optimizer
from hrq.models.stacked import VAEStack


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
    """Train ``model`` on ``data [N, d]`` with a geoopt Riemannian optimizer: :func:`train_vaes`
    with one run, the one training loop (codebook init, annealing and metrics are described there).

    ``seed`` seeds the epochs' shuffling, the k-means init, the dead-code draws and (for HyperVQ,
    RSQ) the Gumbel noise. After each epoch the metrics (``train/loss``,
    ``train/reconstruction_loss``, ``train/quantizer_loss``, ``train/epoch_seconds``,
    ``train/temperature`` where annealed, ``eval/...``) are passed to ``on_epoch(epoch, metrics)``
    (``epoch`` counts from 0; e.g. an MLflow logger) and collected in the returned history (one
    dict per epoch).
    """
    relay = None if on_epoch is None else (lambda run, epoch, metrics: on_epoch(epoch, metrics))
    return train_vaes([model], data, seeds=[seed], epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, kmeans_sample=kmeans_sample, on_epoch=relay, progress=progress)[0]


def train_vaes(
    models: Sequence[ResidualQuantizedVAE],
    data: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 128,
    lr: float | Sequence[float] = 1e-3,
    optimizer: str = "adam",
    kmeans_sample: int | None = None,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[list[dict[str, float]]]:
    """Train R independent VAEs of one shape (e.g. the seeds of one cell) on ``data [N, d]`` as
    one :class:`~hrq.models.stacked.VAEStack`, with a geoopt Riemannian optimizer.

    Runs are independent and each is what it would be alone (:func:`train_vae` is this with one
    run): run ``r`` shuffles each epoch with a CPU generator seeded with ``seeds[r]``, initialises
    its codebooks with that seed, and draws its dead-code replacements
    (``ResidualQuantizer.generator``) and, for quantizers that do not stack, torch's global
    generator's draws (Gumbel noise) from device generators seeded with ``seeds[r]``; its
    parameters get only its own gradients. Stacking changes only floating-point rounding (batched
    GEMMs) and the speed: a step's fixed overhead is paid once for all runs.

    Codebook init: a quantizer with ``kmeans_init`` that is not yet initialised gets its
    codebooks from :func:`init_codebooks` before the first step: k-means per level on the
    latents of all items (``kmeans_sample=None``) or of a seeded sample of ``kmeans_sample``
    items; ``kmeans_sample=0`` on the latents of the run's first training batch only (the
    TIGER-style init that issue 13 measured collapsing). Other quantizers start as built.

    After each epoch each run's metrics are passed to ``on_epoch(run, epoch, metrics)`` (``epoch``
    counts from 0) and collected in its history (one dict per epoch):

    * ``train/loss``, ``train/reconstruction_loss``, ``train/quantizer_loss``: train-mode means;
    * ``train/epoch_seconds``: wall-clock seconds of the stack's training pass (evaluation
      excluded; the same for every run);
    * ``train/temperature``: for quantizers with a Gumbel-softmax temperature (HyperVQ, RSQ),
      the temperature the next training pass would use;
    * ``eval/...``: :func:`evaluate_vae` over all items, e.g. ``eval/reconstruction_loss`` and
      ``eval/collision_rate`` (whole multitokens); :func:`collision_summary` finds its minimum.

    Annealing: quantizers with ``set_step``/``step`` (:class:`~hrq.quantize.AnnealedQuantizer`)
    anneal by one step per optimizer step. HyperVQ and RSQ advance their step themselves on each
    training-mode forward pass, which is exactly one per optimizer step here, so the loop only
    calls ``set_step`` for a quantizer whose step did not move in a forward pass (never counting
    twice).

    Args:
        models: VAEs of one shape, on ``data``'s device; trained in place.
        seeds: one seed per model.
        lr: one learning rate for every run, or one per model: runs of one shape at different
            learning rates (Tables 2-4's tokenizer lr grid) stack too
            (:meth:`~hrq.models.VAEStack.param_groups`).
    Returns:
        per model, its history.
    """
    if len(seeds) != len(models):
        raise ValueError(f"need one seed per model: {len(models)} models, {len(seeds)} seeds")
    lrs = [float(lr)] * len(models) if isinstance(lr, (int, float)) else [float(x) for x in lr]
    if len(lrs) != len(models):
        raise ValueError(f"need one learning rate per model: {len(models)} models, {len(lrs)} learning rates")
    require_finite(data, "train_vae data")  # once: the steps are not checked one by one
    if kmeans_sample is not None and kmeans_sample < 0:
        raise ValueError(f"kmeans_sample must be None (all items), 0 (first batch) or > 0, got {kmeans_sample}")
    n, device = data.shape[0], data.device
    for model, seed in zip(models, seeds):
        quantizer = model.quantizer
        if getattr(quantizer, "kmeans_init", False) and not bool(quantizer.initialized):
            if kmeans_sample == 0:  # the run's first batch: the first draw of its epoch generator
                first = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:batch_size]
                init_codebooks(model, data[first.to(device)], seed=seed)
            else:
                init_codebooks(model, data, sample=kmeans_sample, seed=seed)
        if hasattr(quantizer, "generator"):
            quantizer.generator = torch.Generator(device=device).manual_seed(int(seed))
        model.train()
    stack = VAEStack(models, [torch.Generator(device=device).manual_seed(int(s)) for s in seeds])
    opt = riemannian_optimizer(stack.param_groups(lrs), lrs[0], optimizer)
    epoch_generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    quantizers = [m.quantizer for m in models]
    anneal = _annealed(quantizers[0])
    histories: list[list[dict[str, float]]] = [[] for _ in models]
    names = [f"seed {s}" + (f" lr {x:g}" if len(set(lrs)) > 1 else "") for s, x in zip(seeds, lrs)]
    monitor = LossMonitor(names if len(seeds) > 1 else None)
    runs = f" × {len(models)} runs" if len(models) > 1 else ""
    bar = tqdm(range(epochs), desc=f"{models[0].geometry} VAE{runs}", disable=not progress, leave=False)
    for epoch in bar:
        stack.train()
        start_time = time.perf_counter()
        perm = torch.stack([torch.randperm(n, generator=g) for g in epoch_generators]).to(device)  # [R, N]
        # Loss sums stay on the device, read once per epoch (a float() per step synchronises).
        sums = torch.zeros(len(models), 3, device=device)
        monitor.start_epoch(epoch)
        for step_index, start in enumerate(range(0, n, batch_size)):
            batch = data[perm[:, start : start + batch_size]]  # [R, B, d]: each run its own items
            steps = [q.step for q in quantizers] if anneal else []
            out = stack(batch)
            for q, step in zip(quantizers, steps):
                if q.step == step:
                    q.set_step(step + 1)
            opt.zero_grad(set_to_none=True)
            out.loss.sum().backward()  # runs share no parameter: each gets its own gradient
            opt.step()
            monitor.observe(out.loss, step_index)
            sums += torch.stack([out.loss.detach(), out.reconstruction_loss.detach(),
                                 out.quantizer_loss.detach()], -1) * batch.shape[1]
        means = (sums / n).tolist()  # synchronises: the epoch's work is done
        seconds = time.perf_counter() - start_time
        monitor.check()  # a diverged epoch stops training before it is reported or written
        stack.write_back()
        for run, (model, (total, recon, quant)) in enumerate(zip(models, means)):
            metrics = {"train/loss": total, "train/reconstruction_loss": recon,
                       "train/quantizer_loss": quant, "train/epoch_seconds": seconds}
            if hasattr(model.quantizer, "temperature"):
                metrics["train/temperature"] = float(model.quantizer.temperature)
            metrics.update({f"eval/{k}": v for k, v in evaluate_vae(model, data).items()})
            histories[run].append(metrics)
            if on_epoch is not None:
                on_epoch(run, epoch, metrics)
        bar.set_postfix(loss=f"{sum(m[0] for m in means) / len(means):.4f}")
    return histories


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
