"""Jointly learned node embedding + (H)RQ for hierarchy modelling (HRQ paper §4.1, App. C.1).

Every node gets an ``h``-dimensional embedding, Euclidean for RQ or a point of the Poincaré
ball for HRQ. For a train relation (u, v) (v a hypernym of u) the loss is Nickel & Kiela's

    -log softmax(-d(E(u), E(v)) against -d(E(u), E(v')) for sampled negatives v')
    + L_RQ(E(u)) + L_RQ(E(v)),

with negatives drawn uniformly and masked out when they are u's hypernyms in the *train*
relations or equal to v (test relations are never looked at). Negatives are sampled on the
device for a whole batch at once; membership is one ``searchsorted`` on sorted pair keys.
"""

from __future__ import annotations

import math
import time

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import geoopt
import torch
from torch import nn
from tqdm.auto import tqdm

from hrq.checks import LossMonitor
from hrq.manifold import BALL_EPS, poincare_ball
from hrq.quantize import ResidualQuantizer, append_dedup_token
from hrq.quantize.distance import nearest_scores


class HierarchyTokenizer(nn.Module):
    """Node embedding table plus a quantizer over it.

    Args:
        n_nodes: number of nodes.
        dim: embedding dimension ``h``.
        levels: tokens per multitoken ``k`` (before the extra token).
        codebook_size: ``s``.
        geometry: ``"euclidean"`` (RQ) or ``"poincare"`` (HRQ).
        curvature, residual, loss_distance, commitment: as in :class:`ResidualQuantizer`
            (``curvature`` defaults to 1).
        quantizer: any quantizer of :func:`hrq.quantize.build_quantizer` instead (``levels``,
            ``codebook_size``, ``geometry``, ``residual``, ``loss_distance``, ``commitment``
            and the curvature are then its own; the embedding lives where its inputs do, on the
            quantizer's own ball for a Poincaré quantizer: one curvature for both, and a
            ``curvature`` that disagrees with the quantizer's is an error). For a quantizer of tangent vectors with a
            ``tangent_ball`` (HG-Rec) the embedding is a tangent vector and every distance of
            this model (relation loss, rankings) is that ball's after ``exp0``, the geometry the
            quantizer compares codewords in: with Euclidean relation distances the two losses
            pull the embedding to different scales (on the demo taxonomy HG-Rec's codes then
            collided for 88% of nodes, mean rank 109 against 13 for RQ).
        init_scale: std of the initial embeddings (mapped with exp0 on the ball).
    """

    def __init__(self, n_nodes: int, dim: int, levels: int | None = None, codebook_size: int | None = None, *,
                 geometry: str = "euclidean", curvature: float | None = None, residual: str = "paper",
                 loss_distance: str = "squared_norm", commitment: float = 0.25,
                 quantizer: nn.Module | None = None, init_scale: float = 1e-3) -> None:
        super().__init__()
        if quantizer is None:
            if levels is None or codebook_size is None:
                raise ValueError("give levels and codebook_size, or a quantizer")
            quantizer = ResidualQuantizer(
                levels, codebook_size, dim, geometry=geometry, curvature=1.0 if curvature is None else curvature,
                residual=residual, loss_distance=loss_distance, commitment=commitment, kmeans_init=True,
            )
        elif quantizer.dim != dim:
            raise ValueError(f"quantizer.dim {quantizer.dim} != embedding dim {dim}")
        self.quantizer = quantizer
        self.geometry = quantizer.geometry
        self.tangent_ball = quantizer.tangent_ball if self.geometry == "euclidean" else None
        # The embedding takes its ball from the quantizer (as the VAE does): codewords and the
        # points they quantize must share one curvature, or the Möbius residuals and distances
        # mix two geometries without any error.
        ball = quantizer.ball if self.geometry == "poincare" else self.tangent_ball
        if ball is not None:
            own = float(ball.c)
            if curvature is not None and float(curvature) != own:
                raise ValueError(f"curvature={curvature} but quantizer {type(quantizer).__name__} works on the "
                                 f"ball of curvature {own}; the embedding uses the quantizer's ball")
            curvature = own
        self.curvature = 1.0 if curvature is None else float(curvature)
        init = torch.randn(n_nodes, dim) * init_scale
        if self.geometry == "poincare":
            self.ball = quantizer.ball
            self.embedding = geoopt.ManifoldParameter(self.ball.expmap0(init), manifold=self.ball)
        else:
            self.ball = None
            self.embedding = nn.Parameter(init)

    @torch.no_grad()
    def project_(self, *nodes: torch.Tensor) -> None:
        """Keep the tangent embeddings (HG-Rec) of ``nodes`` (index tensors of any shape, e.g. a
        batch's children, parents and negatives) where ``exp0`` still separates
        them: within the norm whose image is geoopt's projection radius (≈3.1 in float32 at
        c = 1). Beyond it every vector maps to that radius, gets no radial gradient from either
        loss and never comes back (on the demo taxonomy embeddings drifted to norm 28). This is
        geoopt's projection of ball points, in tangent coordinates; a no-op for other
        embeddings (points of the ball are projected by geoopt itself)."""
        if self.tangent_ball is None:
            return
        max_norm = math.atanh(1 - BALL_EPS.get(self.embedding.dtype, 4e-3)) / self.curvature**0.5
        index = torch.cat([n.flatten() for n in nodes])  # only when there is something to project
        rows = self.embedding[index]
        self.embedding[index] = rows * (max_norm / rows.norm(dim=-1, keepdim=True).clamp_min(max_norm))

    def on_ball(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings as points where distances are measured: ``exp0`` of tangent embeddings
        (HG-Rec), else unchanged."""
        return self.tangent_ball.expmap0(x) if self.tangent_ball is not None else x

    def rows(self, nodes: torch.Tensor) -> torch.Tensor:
        """Embeddings of ``nodes [...]`` -> ``[..., dim]`` with a *sparse* gradient, so an
        optimizer step touches only the rows of the batch (Nickel & Kiela's sparse updates): a
        dense gradient made every step O(n_nodes · h), 7× slower on WordNet."""
        return nn.functional.embedding(nodes, self.embedding, sparse=True)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance in the embedding's geometry, broadcasting over leading dims."""
        if self.ball is not None:
            return self.ball.dist(a, b)
        if self.tangent_ball is not None:
            return self.tangent_ball.dist(self.on_ball(a), self.on_ball(b))
        return (a - b).pow(2).sum(-1).clamp_min(1e-15).sqrt()

    def ranking_scores(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[A, B]`` scores of points ``a [A, h]`` against ``b [B, h]`` ordered as their distances
        within each row, by one GEMM (:func:`hrq.quantize.distance.nearest_scores`): the
        broadcast distance needs ``A·B·h`` floats, ~10 GB for 1024 nouns against all of WordNet."""
        hyperbolic = self.ball is not None or self.tangent_ball is not None
        return nearest_scores(self.on_ball(a), self.on_ball(b), self.curvature if hyperbolic else None)

    def relation_loss(self, child: torch.Tensor, parent: torch.Tensor, negatives: torch.Tensor,
                      valid: torch.Tensor) -> torch.Tensor:
        """Mean softmax ranking loss of ``parent [B]`` against ``negatives [B, M]`` for ``child [B]``.

        ``valid [B, M]`` masks out negatives that are true hypernyms.
        """
        candidates = torch.cat([parent.unsqueeze(-1), negatives], dim=-1)  # [B, 1+M]
        d = self.distance(self.rows(child).unsqueeze(1), self.rows(candidates))
        logits = (-d).masked_fill(~torch.cat([torch.ones_like(valid[:, :1]), valid], -1), float("-inf"))
        return nn.functional.cross_entropy(logits, torch.zeros_like(child))

    def quantizer_loss(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.rows(nodes)).loss

    @torch.no_grad()
    def codes(self) -> torch.Tensor:
        """``LongTensor [n_nodes, levels]`` greedy codes of every node (eval mode)."""
        was = self.training
        self.eval()
        try:
            return self.quantizer.encode(self.embedding.detach())
        finally:
            self.train(was)

    @torch.no_grad()
    def multitokens(self) -> torch.Tensor:
        """``[n_nodes, levels + 1]`` codes with the extra token that makes them unique."""
        return append_dedup_token(self.codes())


@dataclass
class RelationSampler:
    """Batches of train relations with masked uniform negatives, all on one device."""

    relations: torch.Tensor  # [E, 2] (child, parent)
    n_nodes: int
    negatives: int
    generator: torch.Generator
    keys: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.keys = torch.sort(self.relations[:, 0] * self.n_nodes + self.relations[:, 1]).values

    def is_relation(self, child: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        key = child * self.n_nodes + other
        pos = torch.searchsorted(self.keys, key).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == key

    def batches(self, batch_size: int):
        perm = torch.randperm(self.relations.shape[0], generator=self.generator,
                              device=self.generator.device).to(self.relations.device)
        for start in range(0, perm.numel(), batch_size):
            batch = self.relations[perm[start : start + batch_size]]
            child, parent = batch[:, 0], batch[:, 1]
            neg = torch.randint(self.n_nodes, (batch.shape[0], self.negatives), generator=self.generator,
                                device=self.generator.device).to(self.relations.device)
            c = child.unsqueeze(-1).expand_as(neg)
            valid = (neg != parent.unsqueeze(-1)) & (neg != c) & ~self.is_relation(c, neg)
            yield child, parent, neg, valid


def train_hierarchy_tokenizer(
    model: HierarchyTokenizer,
    relations: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 50,
    negatives: int = 50,
    warmup_epochs: int = 0,
    warmup_lr: float = 0.01,
    seed: int = 0,
    codebook_optimizer: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train embedding and codebooks jointly with Riemannian SGD (plain SGD off the ball).

    The first ``warmup_epochs`` run at ``warmup_lr`` (Nickel & Kiela's burn-in). When the
    warm-up ends (or at the start without warm-up) the codebooks are initialised by k-means on
    all embeddings, so they start where the embedding has spread to rather than at its init.

    Args:
        relations: ``LongTensor [E, 2]`` train (hyponym, hypernym) pairs on the model's device.
        codebook_optimizer: ``None`` or ``{"kind": "sgd"}``: the codebooks follow the
            embedding's schedule with Riemannian SGD (the paper's setting). ``{"kind": "adam",
            "lr": x}``: Riemannian Adam at the fixed ``lr`` x instead, for codebooks plain SGD
            at Nickel & Kiela's lr 1.0 cannot train: HG-Rec's tangent codewords, whose squared
            ball-distance gradients threw them past exp0's float32 reach (median norms 13-35,
            89% of nodes sharing a multitoken on the demo taxonomy); HG-Rec itself trains them
            with AdamW at 1e-3 (its Table 6).
    Returns:
        one dict per epoch: ``train/loss``, ``train/relation_loss``, ``train/quantizer_loss``,
        ``train/epoch_seconds`` (the training pass, diagnostics excluded) and the codebook diagnostics of all nodes (``usage/l*``, ``perplexity/l*``,
        ``collision_rate``, ...).
    """
    device = model.embedding.device
    relations = relations.to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    sampler = RelationSampler(relations, model.embedding.shape[0], negatives, gen)
    start_lr = warmup_lr if warmup_epochs else lr
    # Sparse Riemannian SGD for the embedding table (only the batch's rows move), plain
    # Riemannian SGD for the dense codebooks; both follow the same learning-rate schedule
    # unless the codebooks get their own optimizer.
    book_opt = dict(codebook_optimizer or {"kind": "sgd"})
    kind = book_opt.pop("kind", "sgd")
    if kind == "sgd" and not book_opt:
        books = geoopt.optim.RiemannianSGD(model.quantizer.parameters(), lr=start_lr)
        scheduled = [books]
    elif kind == "adam" and set(book_opt) == {"lr"}:
        books = geoopt.optim.RiemannianAdam(model.quantizer.parameters(), lr=float(book_opt["lr"]))
        scheduled = []
    else:
        raise ValueError(f"codebook_optimizer must be {{'kind': 'sgd'}} or {{'kind': 'adam', 'lr': x}}, "
                         f"got {codebook_optimizer!r}")
    embedding_opt = geoopt.optim.SparseRiemannianSGD([model.embedding], lr=start_lr)
    optimizers = [embedding_opt, books]
    history = []
    monitor = LossMonitor()
    bar = tqdm(range(epochs), desc=f"{model.geometry} tokenizer", disable=not progress, leave=False)
    for epoch in bar:
        if epoch == warmup_epochs:
            for opt in [embedding_opt, *scheduled]:
                for group in opt.param_groups:
                    group["lr"] = lr
        if epoch == min(warmup_epochs, epochs - 1) and getattr(model.quantizer, "kmeans_init", False):
            model.quantizer.init_from(model.embedding.detach())  # k-means per level on all embeddings
        model.train()
        # Loss sums stay on the device and are read once per epoch: a float() per step would
        # synchronise the device three times a step.
        sums = torch.zeros(3, device=device)
        count = 0
        monitor.start_epoch(epoch)
        start_time = time.perf_counter()
        for step, (child, parent, neg, valid) in enumerate(sampler.batches(batch_size)):
            rel = model.relation_loss(child, parent, neg, valid)
            q = model.quantizer_loss(torch.cat([child, parent]))
            # Both terms are batch means, as in Nickel & Kiela's code (whose batch size 50 and
            # lr 1.0 the paper adopts). A summed relation loss moves a frequent hypernym by the
            # sum of its relations' gradients in one step: without the ball's conformal factor to
            # damp it, Euclidean embeddings then jump to norms ~50 at lr 1.0 and never recover.
            loss = rel + 2 * q  # L_RQ(E(u)) + L_RQ(E(v)) per relation
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()
            model.project_(child, parent, neg)
            monitor.observe(loss, step)
            n = child.numel()
            sums += torch.stack([loss.detach(), rel.detach(), q.detach()]) * n
            count += n
        total, rel_total, q_total = (sums / count).tolist()  # synchronises: the epoch's work is done
        seconds = time.perf_counter() - start_time
        monitor.check()  # a diverged epoch stops the job before anything is written
        metrics = {"train/loss": total, "train/relation_loss": rel_total,
                   "train/quantizer_loss": q_total, "train/epoch_seconds": seconds}
        metrics.update(model.quantizer.code_stats(model.codes()).as_dict())
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history


@torch.no_grad()
def ranking_metrics(model: HierarchyTokenizer, relations: torch.Tensor, n_nodes: int,
                    batch_size: int = 256) -> dict[str, float]:
    """Nickel & Kiela's reconstruction metrics of the continuous embedding.

    For every node u with hypernyms in ``relations``, all other nodes are ranked by distance
    to u; for each true hypernym v its rank counts only non-hypernyms closer than v (the
    filtered setting). Returns ``mean_rank`` (1 = best) and ``map`` (mean average precision).
    """
    emb = model.embedding.detach()
    relations = relations.to(emb.device)
    heads, tails = relations[:, 0].contiguous(), relations[:, 1].contiguous()
    children = heads.unique()
    ranks, aps = [], []
    for start in range(0, children.numel(), batch_size):
        us = children[start : start + batch_size]
        d = model.ranking_scores(emb[us], emb)  # [b, n], ordered as distances per row
        truth = torch.zeros_like(d, dtype=torch.bool)
        row = torch.searchsorted(us, heads)
        ok = (row < us.numel()) & (us[row.clamp_max(us.numel() - 1)] == heads)
        truth[row[ok], tails[ok]] = True
        d[torch.arange(us.numel()), us] = float("inf")  # never rank u itself
        order = torch.argsort(d, dim=1)
        hit = torch.gather(truth, 1, order)  # [b, n] true hypernym at sorted position
        pos = torch.arange(1, n_nodes + 1, device=emb.device).expand_as(hit)
        n_true_before = torch.cumsum(hit, 1)
        # filtered rank: 1 + number of non-hypernyms ranked before this hypernym
        filtered = (pos - n_true_before + 1)[hit].float()
        ranks.append(filtered)
        precision = n_true_before.float() / pos
        aps.append((precision * hit).sum(1) / hit.sum(1).clamp_min(1))
    return {"mean_rank": float(torch.cat(ranks).mean()), "map": float(torch.cat(aps).mean())}
