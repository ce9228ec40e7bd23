"""Jointly learned node embedding + (H)RQ for hierarchy modelling (HRQ paper §4.1, App. C.1).

Every node gets an ``h``-dimensional embedding, Euclidean for RQ or a point of the Poincaré
ball for HRQ. For a train relation (u, v) (v a hypernym of u) the loss is Nickel & Kiela's

    -log softmax(-d(E(u), E(v)) against -d(E(u), E(v')) for sampled negatives v')
    + L_RQ(E(u)) + L_RQ(E(v)),

with negatives drawn uniformly and masked out when they are u's hypernyms in the *train*
relations or equal to v (test relations are never looked at). Negatives are sampled on the
device for many steps at once; membership is one ``searchsorted`` on sorted pair keys.

The seeds of one cell train as one stack (:class:`TokenizerStack`,
:func:`train_hierarchy_tokenizers`); one run is a stack of one.
"""

from __future__ import annotations

import math
import time
import warnings

from typing import Any, Callable, Iterator, Mapping, Sequence

import geoopt
import torch
from torch import nn
from tqdm.auto import tqdm

from hrq.checks import LossMonitor
from hrq.manifold import BALL_EPS, poincare_distance
from hrq.quantize import ResidualQuantizer, append_dedup_token
from hrq.quantize.distance import nearest_scores
from hrq.quantize.stacked import stack_quantizers


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
        # only when there is something to project
        clip_tangent_rows_(self.embedding, torch.cat([n.flatten() for n in nodes]), self.curvature)

    def on_ball(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings as points where distances are measured: ``exp0`` of tangent embeddings
        (HG-Rec), else unchanged."""
        return self.tangent_ball.expmap0(x) if self.tangent_ball is not None else x

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance in the embedding's geometry, broadcasting over leading dims (on the ball:
        geoopt's ``dist``, fused: :func:`hrq.manifold.poincare_distance`)."""
        if self.ball is not None:
            return poincare_distance(a, b, self.curvature)
        if self.tangent_ball is not None:
            return poincare_distance(self.on_ball(a), self.on_ball(b), self.curvature)
        return (a - b).pow(2).sum(-1).clamp_min(1e-15).sqrt()

    def ranking_scores(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[A, B]`` scores of points ``a [A, h]`` against ``b [B, h]`` ordered as their distances
        within each row, by one GEMM (:func:`hrq.quantize.distance.nearest_scores`): the
        broadcast distance needs ``A·B·h`` floats, ~10 GB for 1024 nouns against all of WordNet."""
        hyperbolic = self.ball is not None or self.tangent_ball is not None
        return nearest_scores(self.on_ball(a), self.on_ball(b), self.curvature if hyperbolic else None)

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


class RelationSampler:
    """Batches of train relations with masked uniform negatives for R runs, all on one device.

    Run ``r`` draws its epoch order and its negatives from ``generators[r]`` alone, so a run's
    batches are the same whether it is sampled alone or in a stack. Negatives are drawn for
    ``chunk_steps`` steps at once (one draw per run and chunk, not per step), and their mask is
    one ``searchsorted`` on sorted pair keys for the whole chunk.

    Args:
        relations: ``LongTensor [E, 2]`` (child, parent) pairs on the device.
        n_nodes: negatives are drawn uniformly from ``range(n_nodes)``.
        negatives: ``M`` negatives per relation.
        generators: one generator per run, on the relations' device.
        chunk_steps: steps whose negatives are drawn at once.
    """

    def __init__(self, relations: torch.Tensor, n_nodes: int, negatives: int,
                 generators: Sequence[torch.Generator], chunk_steps: int = 64) -> None:
        if not generators:
            raise ValueError("need one generator per run, got none")
        self.relations, self.n_nodes, self.negatives = relations, n_nodes, negatives
        self.generators = list(generators)
        self.chunk_steps = chunk_steps
        self.keys = torch.sort(relations[:, 0] * n_nodes + relations[:, 1]).values

    def is_relation(self, child: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        key = child * self.n_nodes + other
        pos = torch.searchsorted(self.keys, key.flatten()).clamp_max(self.keys.numel() - 1).view_as(key)
        return self.keys[pos] == key

    def _per_run(self, draw) -> torch.Tensor:
        return torch.stack([draw(g) for g in self.generators]).to(self.relations.device)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """One epoch of ``(child [R, B], parent [R, B], negatives [R, B, M], valid [R, B, M])``;
        ``valid`` is False for a negative that is the child, the parent, or any train hypernym
        of the child."""
        n_rel = self.relations.shape[0]
        order = self._per_run(lambda g: torch.randperm(n_rel, generator=g, device=g.device))  # [R, E]
        chunk = batch_size * self.chunk_steps
        for lo in range(0, n_rel, chunk):
            hi = min(lo + chunk, n_rel)
            pairs = self.relations[order[:, lo:hi]]  # [R, n, 2]
            child, parent = pairs[..., 0], pairs[..., 1]
            neg = self._per_run(lambda g: torch.randint(self.n_nodes, (hi - lo, self.negatives), generator=g,
                                                        device=g.device))  # [R, n, M]
            c = child.unsqueeze(-1).expand_as(neg)
            valid = (neg != parent.unsqueeze(-1)) & (neg != c) & ~self.is_relation(c, neg)
            for start in range(0, hi - lo, batch_size):
                step = slice(start, start + batch_size)
                yield child[:, step], parent[:, step], neg[:, step], valid[:, step]


def clip_tangent_rows_(table: torch.Tensor, index: torch.Tensor, curvature: float) -> None:
    """Rescale rows ``index`` of tangent vectors ``table`` (in place) to at most the norm whose
    ``exp0`` is geoopt's projection radius (see :meth:`HierarchyTokenizer.project_`)."""
    max_norm = math.atanh(1 - BALL_EPS.get(table.dtype, 4e-3)) / curvature**0.5
    rows = table[index]
    table[index] = rows * (max_norm / rows.norm(dim=-1, keepdim=True).clamp_min(max_norm))


def ranking_loss(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], child: torch.Tensor,
                 candidates: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax ranking loss of each relation, ``[...]``: ``child [..., h]`` against
    ``candidates [..., 1+M, h]`` (the parent first, then the negatives) by ``distance``; ``valid
    [..., M]`` masks out negatives that are true hypernyms."""
    logits = -distance(child.unsqueeze(-2), candidates)  # [..., 1+M]
    keep = torch.cat([torch.ones_like(valid[..., :1]), valid], -1)
    logits = logits.masked_fill(~keep, float("-inf"))
    return torch.logsumexp(logits, -1) - logits[..., 0]


class TokenizerStack(nn.Module):
    """R :class:`HierarchyTokenizer` members of one shape trained as one (issue 16).

    The members' embedding tables are concatenated into one ``[R * n_nodes, h]`` table (run
    ``r``'s node ``u`` is row ``r * n_nodes + u``), and their quantizers one module
    (:func:`~hrq.quantize.stacked.stack_quantizers`: stacked for RQ and HRQ; other quantizers,
    HG-Rec's, stay the members' own and run one after another within each step). Every loss is per run (``[R]``); their sum gives each run its own gradient.
    :meth:`write_back` copies the trained parameters into the members, which then give codes,
    rankings and outputs exactly as a single run's model does.

    The table is updated row-sparsely: :meth:`losses` gathers the step's distinct rows as one
    dense leaf and :meth:`step_rows` takes a Riemannian SGD step on those rows alone, with
    geoopt's ``egrad2rgrad`` and ``retr``: the update of geoopt's ``SparseRiemannianSGD``
    (without momentum) on a dense ``[rows, h]`` gradient. Its sparse-tensor coalescing and
    ``index_select`` were 60% of a stacked Table 1 step (benchmarks/cost.py).
    """

    def __init__(self, models: Sequence[HierarchyTokenizer]) -> None:
        super().__init__()
        if not models:
            raise ValueError("need at least one model to stack")
        first = models[0]
        for m in models:
            if (m.embedding.shape, m.geometry, m.curvature, m.tangent_ball is None) != \
                    (first.embedding.shape, first.geometry, first.curvature, first.tangent_ball is None):
                raise ValueError("stacked tokenizers must share n_nodes, h, geometry and curvature")
        self.runs, (self.n_nodes, self.dim) = len(models), first.embedding.shape
        self._members = tuple(models)  # a tuple: not registered as submodules
        self.quantizer = stack_quantizers([m.quantizer for m in models])
        self.manifold = first.ball if first.ball is not None else geoopt.Euclidean()
        table = torch.cat([m.embedding.detach() for m in models])
        self.embedding = geoopt.ManifoldParameter(table, manifold=self.manifold, requires_grad=False)
        self.register_buffer("offsets", torch.arange(self.runs, device=table.device) * self.n_nodes)
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None  # (table rows, their leaf) of the step
        self._losses_of_rows = self._rows_losses  # compiled by compile_losses()

    def _flat(self, nodes: torch.Tensor) -> torch.Tensor:
        return nodes + self.offsets.view(-1, *[1] * (nodes.ndim - 1))

    def _gather(self, nodes: torch.Tensor) -> torch.Tensor:
        """Run ``r``'s embeddings of ``nodes [R, ...]`` -> ``[R, ..., h]``, through one leaf of the
        distinct rows (a node seen twice adds up its gradients there).

        Distinct rows by a sort into fixed-size slots rather than ``torch.unique``, whose output
        size would make the host wait for the device every step: slot ``i < U`` holds the i-th
        distinct row; the slots past ``U`` repeat rows already present, get no gradient, and
        their step adds exactly zero (:meth:`step_rows`).
        """
        flat = self._flat(nodes).flatten()
        rows, order = flat.sort()
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        slot = first.long().cumsum(0) - 1  # the sorted entries' slots
        index = rows.clone().scatter_(0, slot, rows)  # slot -> row
        inverse = torch.empty_like(slot).scatter_(0, order, slot)  # position in nodes -> slot
        # index_select (backward: index_add) rather than [] (index_put): 3x faster on CPU
        leaf = self.embedding.detach().index_select(0, index).requires_grad_()
        self._rows = (index, leaf)
        return leaf.index_select(0, inverse).view(*nodes.shape, self.dim)

    def losses(self, child: torch.Tensor, parent: torch.Tensor, negatives: torch.Tensor,
               valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-run mean ranking loss ``[R]`` of ``parent [R, B]`` against ``negatives [R, B, M]``
        (``valid [R, B, M]`` masks true hypernyms), and per-run quantizer loss ``[R]`` of the
        children's and parents' embeddings."""
        batch = child.shape[1]
        rows = self._gather(torch.cat([child, parent, negatives.flatten(1)], -1))  # [R, 2B + BM, h]
        # split, not slices: its backward is one cat, where each slice's backward zero-fills a
        # tensor of the whole gather's size
        child_rows, parent_rows, negative_rows = rows.split([batch, batch, rows.shape[1] - 2 * batch], 1)
        return self._losses_of_rows(child_rows, parent_rows, negative_rows.view(*negatives.shape, self.dim), valid)

    def _rows_losses(self, child_rows: torch.Tensor, parent_rows: torch.Tensor, negative_rows: torch.Tensor,
                     valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`losses` from the gathered rows: the part :meth:`compile_losses` compiles."""
        candidates = torch.cat([parent_rows.unsqueeze(2), negative_rows], 2)
        relation = ranking_loss(self._members[0].distance, child_rows, candidates, valid).mean(-1)
        return relation, self.quantizer(torch.cat([child_rows, parent_rows], 1)).loss

    def compile_losses(self) -> None:
        """Compile the losses (``torch.compile``: the quantizer and ranking loss as fused kernels),
        falling back to eager if compiling fails on the first step (e.g. no C++ compiler).
        Compiling takes about a minute on a CPU; it pays for long runs only (benchmarks/cost.py)."""
        compiled = torch.compile(self._rows_losses, dynamic=False)

        def first_call(*args):
            try:
                out = compiled(*args)
                self._losses_of_rows = compiled
            except Exception as err:  # noqa: BLE001 - any compiler failure: train eagerly instead
                warnings.warn(f"torch.compile of the tokenizer step failed ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); training eagerly")
                self._losses_of_rows = self._rows_losses
                out = self._rows_losses(*args)
            return out

        self._losses_of_rows = first_call

    @torch.no_grad()
    def step_rows(self, lr: float) -> None:
        """Riemannian SGD on the rows the last :meth:`losses` gathered (after ``backward``); tangent
        embeddings (HG-Rec) are kept within exp0's reach (:meth:`HierarchyTokenizer.project_`)."""
        index, leaf = self._rows
        if leaf.grad is not None:
            step = self.manifold.retr(leaf, -lr * self.manifold.egrad2rgrad(leaf, leaf.grad)) - leaf
            # added, not copied: a row repeated in an unused slot adds its zero step (retr of a
            # zero step is the point itself), while a copy could overwrite the real update
            self.embedding.index_add_(0, index, step)
            if self._members[0].tangent_ball is not None:
                clip_tangent_rows_(self.embedding, index, self._members[0].curvature)
        self._rows = None

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each run's embedding rows and codebooks into its member."""
        for run, m in enumerate(self._members):
            m.embedding.copy_(self.embedding[run * self.n_nodes : (run + 1) * self.n_nodes])
        self.quantizer.write_back()

    @torch.no_grad()
    def init_codebooks(self, generators: Sequence[torch.Generator]) -> None:
        """k-means codebook init of every member from its current embeddings (each with its own
        CPU generator), then into the stack."""
        self.write_back()
        for m, gen in zip(self._members, generators):
            m.quantizer.init_from(m.embedding.detach(), generator=gen)
        self.quantizer.load_members()


def train_hierarchy_tokenizer(model: HierarchyTokenizer, relations: torch.Tensor, *, seed: int = 0,
                              on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                              **options: Any) -> list[dict[str, float]]:
    """Train one tokenizer: :func:`train_hierarchy_tokenizers` with one run (same options).

    Returns its history; ``on_epoch(epoch, metrics)`` is called after each epoch.
    """
    relay = None if on_epoch is None else (lambda run, epoch, metrics: on_epoch(epoch, metrics))
    return train_hierarchy_tokenizers([model], relations, seeds=[seed], on_epoch=relay, **options)[0]


def train_hierarchy_tokenizers(
    models: Sequence[HierarchyTokenizer],
    relations: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    lr: float,
    batch_size: int = 50,
    negatives: int = 50,
    warmup_epochs: int = 0,
    warmup_lr: float = 0.01,
    codebook_optimizer: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    progress: bool = True,
    compiled: bool = False,
) -> list[list[dict[str, float]]]:
    """Train R independent tokenizers (e.g. the seeds of one cell) jointly, as one stack.

    Each model trains its embedding and codebooks jointly with Riemannian SGD (plain SGD off
    the ball). The first ``warmup_epochs`` run at ``warmup_lr`` (Nickel & Kiela's burn-in).
    When the warm-up ends (or at the start without warm-up) the codebooks are initialised by
    k-means on all embeddings, so they start where the embedding has spread to rather than at
    its init.

    Runs are independent and each is what it would be alone: run ``r`` draws its data order,
    negatives and dead-code replacements from a device generator seeded with ``seeds[r]`` and its
    k-means init from a CPU generator seeded with ``seeds[r]``; its parameters get only its own
    gradients. Stacking changes only floating-point rounding (batched GEMMs) and the speed:
    the step's fixed overhead is paid once for all runs (:class:`TokenizerStack`).

    Args:
        models: tokenizers of one shape (:class:`TokenizerStack`), already on their device;
            trained in place.
        relations: ``LongTensor [E, 2]`` train (hyponym, hypernym) pairs.
        seeds: one seed per model.
        codebook_optimizer: ``None`` or ``{"kind": "sgd"}``: the codebooks follow the
            embedding's schedule with Riemannian SGD (the paper's setting). ``{"kind": "adam",
            "lr": x}``: Riemannian Adam at the fixed ``lr`` x instead, for codebooks plain SGD
            at Nickel & Kiela's lr 1.0 cannot train: HG-Rec's tangent codewords, whose squared
            ball-distance gradients threw them past exp0's float32 reach (median norms 13-35,
            89% of nodes sharing a multitoken on the demo taxonomy); HG-Rec itself trains them
            with AdamW at 1e-3 (its Table 6).
        on_epoch: called as ``on_epoch(run, epoch, metrics)`` after each epoch, for each run.
        compiled: compile the step's losses (:meth:`TokenizerStack.compile_losses`); the
            results then differ from eager ones by rounding.
    Returns:
        per model, one dict per epoch: ``train/loss``, ``train/relation_loss``,
        ``train/quantizer_loss``, ``train/epoch_seconds`` (the stack's training pass,
        diagnostics excluded: the same for every run) and the codebook diagnostics of all nodes
        (``usage/l*``, ``perplexity/l*``, ``collision_rate``, ...).
    """
    if len(seeds) != len(models):
        raise ValueError(f"need one seed per model: {len(models)} models, {len(seeds)} seeds")
    stack = TokenizerStack(models)
    if compiled:
        stack.compile_losses()
    device = stack.embedding.device
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    kmeans_generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    for m, gen in zip(models, generators):
        if hasattr(m.quantizer, "generator"):
            m.quantizer.generator = gen  # dead-code draws: the run's own stream
    sampler = RelationSampler(relations.to(device), stack.n_nodes, negatives, generators)
    start_lr = warmup_lr if warmup_epochs else lr
    # Riemannian SGD on the batch's rows of the embedding table (TokenizerStack.step_rows), plain
    # Riemannian SGD for the dense codebooks; both follow the same learning-rate schedule
    # unless the codebooks get their own optimizer.
    book_opt = dict(codebook_optimizer or {"kind": "sgd"})
    kind = book_opt.pop("kind", "sgd")
    if kind == "sgd" and not book_opt:
        books = geoopt.optim.RiemannianSGD(stack.quantizer.parameters(), lr=start_lr)
        scheduled = [books]
    elif kind == "adam" and set(book_opt) == {"lr"}:
        books = geoopt.optim.RiemannianAdam(stack.quantizer.parameters(), lr=float(book_opt["lr"]))
        scheduled = []
    else:
        raise ValueError(f"codebook_optimizer must be {{'kind': 'sgd'}} or {{'kind': 'adam', 'lr': x}}, "
                         f"got {codebook_optimizer!r}")
    embedding_lr = start_lr
    kmeans_init = getattr(models[0].quantizer, "kmeans_init", False)
    histories: list[list[dict[str, float]]] = [[] for _ in models]
    monitor = LossMonitor([f"seed {s}" for s in seeds] if len(seeds) > 1 else None)
    runs = f" × {len(models)} seeds" if len(models) > 1 else ""
    bar = tqdm(range(epochs), desc=f"{models[0].geometry} tokenizer{runs}", disable=not progress, leave=False)
    for epoch in bar:
        if epoch == warmup_epochs:
            embedding_lr = lr
            for opt in scheduled:
                for group in opt.param_groups:
                    group["lr"] = lr
        if epoch == min(warmup_epochs, epochs - 1) and kmeans_init:
            stack.init_codebooks(kmeans_generators)  # k-means per level on all embeddings
        stack.train()
        # Loss sums stay on the device and are read once per epoch: a float() per step would
        # synchronise the device three times a step.
        sums = torch.zeros(len(models), 3, device=device)
        count = 0
        monitor.start_epoch(epoch)
        start_time = time.perf_counter()
        for step, (child, parent, neg, valid) in enumerate(sampler.batches(batch_size)):
            rel, q = stack.losses(child, parent, neg, valid)
            # Both terms are batch means, as in Nickel & Kiela's code (whose batch size 50 and
            # lr 1.0 the paper adopts). A summed relation loss moves a frequent hypernym by the
            # sum of its relations' gradients in one step: without the ball's conformal factor to
            # damp it, Euclidean embeddings then jump to norms ~50 at lr 1.0 and never recover.
            loss = rel + 2 * q  # [R]: L_RQ(E(u)) + L_RQ(E(v)) per relation
            books.zero_grad(set_to_none=True)
            loss.sum().backward()  # runs share no parameter: each gets its own gradient
            books.step()
            stack.step_rows(embedding_lr)
            monitor.observe(loss, step)
            n = child.shape[1]
            sums += torch.stack([loss.detach(), rel.detach(), q.detach()], -1) * n
            count += n
        means = (sums / count).tolist()  # synchronises: the epoch's work is done
        seconds = time.perf_counter() - start_time
        monitor.check()  # a diverged epoch stops the job before anything is written
        stack.write_back()
        for run, (model, (total, rel_total, q_total)) in enumerate(zip(models, means)):
            metrics = {"train/loss": total, "train/relation_loss": rel_total,
                       "train/quantizer_loss": q_total, "train/epoch_seconds": seconds}
            metrics.update(model.quantizer.code_stats(model.codes()).as_dict())
            histories[run].append(metrics)
            if on_epoch is not None:
                on_epoch(run, epoch, metrics)
        bar.set_postfix(loss=f"{sum(m[0] for m in means) / len(means):.4f}")
    return histories


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
