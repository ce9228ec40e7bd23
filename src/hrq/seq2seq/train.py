"""Training and beam-search decoding (trie-constrained or free) for the multitoken seq2seq model.

Sources are token-id sequences (a noun's multitoken, or a user's history of item multitokens
concatenated), targets are one multitoken ``[L]`` per source; ids follow
:class:`hrq.seq2seq.MultitokenVocab`.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from hrq.checks import LossMonitor
from hrq.seq2seq.trie import PrefixTrie
from hrq.seq2seq.vocab import EOS, PAD

Sources = Sequence[Sequence[int]] | torch.Tensor
SCHEDULES = ("constant", "inverse_sqrt")
DECODINGS = ("constrained", "free")


def lr_factor(schedule: str, warmup_steps: int = 0) -> Callable[[int], float]:
    """The learning-rate multiplier of optimizer update ``n`` (0-based), for ``LambdaLR``.

    * ``"constant"``: 1 for every update.
    * ``"inverse_sqrt"``: TIGER's schedule (Rajput et al., 2023, App.: "learning rate 0.01 for
      the first 10k steps and then an inverse square root decay"), i.e. T5's
      ``1 / sqrt(max(n, W))`` scaled to start at the base lr: 1 for ``n < W``, then
      ``sqrt(W / n)`` (continuous at ``n = W``). No linear ramp, unlike transformers'
      ``get_inverse_sqrt_schedule``.
    """
    if schedule == "constant":
        return lambda n: 1.0
    if schedule == "inverse_sqrt":
        if warmup_steps < 1:
            raise ValueError(f"inverse_sqrt needs warmup_steps >= 1, got {warmup_steps}")
        return lambda n: 1.0 if n < warmup_steps else math.sqrt(warmup_steps / n)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def pad_sources(sources: Sources, max_len: int | None = None) -> torch.Tensor:
    """Right-pad variable-length token sequences with PAD into ``LongTensor [N, S]``.

    Sequences longer than ``max_len`` keep their LAST ``max_len`` tokens (a history keeps its
    most recent items). ``S`` is the longest length after truncation (at least 1). A tensor
    ``[N, S0]`` is accepted too: its PAD entries are dropped first, so an already padded batch
    can be re-truncated.
    """
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    if isinstance(sources, torch.Tensor):
        if sources.dim() != 2:
            raise ValueError(f"source tensor must be [N, S], got shape {tuple(sources.shape)}")
        rows = [[t for t in row if t != PAD] for row in sources.long().tolist()]
    else:
        rows = [[int(t) for t in row] for row in sources]
    if max_len is not None:
        rows = [row[-max_len:] for row in rows]
    width = max([len(row) for row in rows], default=0)
    out = torch.full((len(rows), max(width, 1)), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def _as_source_tensor(sources: Sources) -> torch.Tensor:
    return sources.long() if isinstance(sources, torch.Tensor) else pad_sources(sources)


def _trim(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop trailing all-PAD columns of ``batch [B, S]``; returns ``(input_ids, attention_mask)``."""
    mask = batch != PAD
    used = mask.any(dim=0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 1
    return batch[:, :width], mask[:, :width].long()


def _model_device(model: torch.nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        model.to(device)
        return torch.device(device)
    return next(model.parameters()).device


def train_seq2seq(
    model: PreTrainedModel,
    sources: Sources,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    device: torch.device | str | None = None,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Teacher-forced training of ``model`` on ``sources -> targets``.

    Args:
        model: e.g. from :func:`hrq.seq2seq.build_model`.
        sources: ``LongTensor [N, S]`` right-padded token ids, or a list of token-id lists
            (padded with :func:`pad_sources`).
        targets: ``LongTensor [N, L]`` target token ids; labels are ``targets`` with EOS
            appended (``[N, L + 1]``), and T5 builds the decoder inputs by shifting them right.
        epochs, batch_size, lr: AdamW at ``lr`` (``weight_decay=0`` is plain Adam) on minibatches
            shuffled each epoch by a generator seeded with ``seed``.
        schedule, warmup_steps: the lr of each optimizer update, :func:`lr_factor` times ``lr``
            (``"constant"``, or TIGER's ``"inverse_sqrt"`` after ``warmup_steps`` updates at ``lr``).
        device: move the model there first; ``None`` keeps the model where it is.
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each (0-based) epoch.
        progress: show a tqdm bar over epochs.

    Returns:
        One dict per epoch: ``{"epoch": e, "train/loss": mean token cross-entropy,
        "train/lr": the lr of the epoch's last update}``.
    """
    src = _as_source_tensor(sources)
    targets = torch.as_tensor(targets).long()
    if targets.dim() != 2 or targets.shape[0] != src.shape[0]:
        raise ValueError(f"targets must be [N={src.shape[0]}, L], got shape {tuple(targets.shape)}")
    if src.shape[0] == 0:
        raise ValueError("no training pairs")
    dev = _model_device(model, device)
    labels = torch.cat([targets, torch.full((targets.shape[0], 1), EOS, dtype=torch.long)], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    # LambdaLR calls the factor with the number of updates done so far: update n runs at f(n).
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(schedule, warmup_steps))
    gen = torch.Generator().manual_seed(seed)
    n = src.shape[0]
    history: list[dict] = []
    monitor = LossMonitor()
    bar = tqdm(range(epochs), desc="seq2seq", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = torch.zeros((), device=dev)  # on the device, read once per epoch (no per-step sync)
        monitor.start_epoch(epoch)
        for step, start in enumerate(range(0, n, batch_size)):
            idx = perm[start : start + batch_size]
            input_ids, mask = _trim(src[idx])
            out = model(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), labels=labels[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            last_lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            monitor.observe(out.loss, step)
            total += out.loss.detach() * idx.numel()  # equal label lengths: token mean
        monitor.check()  # a diverged epoch stops training before it is reported or written
        metrics = {"epoch": epoch, "train/loss": float(total) / n, "train/lr": last_lr}
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history


def _dedup_rows(beams: list[list[int]], top_k: int, length: int) -> list[list[int]]:
    """Keep the first occurrence of each sequence (``-1`` rows dropped), fill the tail with ``-1``."""
    seen: set[tuple[int, ...]] = set()
    kept: list[list[int]] = []
    for beam in beams:
        key = tuple(beam)
        if beam[0] != -1 and key not in seen:
            seen.add(key)
            kept.append(beam)
    return kept + [[-1] * length] * (top_k - len(kept))


def _dedup_in_place(beams: list[list[int]], length: int) -> list[list[int]]:
    """Free decoding: every beam keeps its slot; a repeat of an earlier beam becomes ``-1``."""
    seen: set[tuple[int, ...]] = set()
    out: list[list[int]] = []
    for beam in beams:
        key = tuple(beam)
        out.append(beam if beam[0] != -1 and key not in seen else [-1] * length)
        seen.add(key)
    return out


@torch.no_grad()
def generate_ranked(
    model: PreTrainedModel,
    sources: Sources,
    trie: PrefixTrie,
    *,
    num_beams: int = 10,
    top_k: int = 10,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    decoding: Literal["constrained", "free"] = "constrained",
) -> torch.Tensor:
    """Beam search: the ``top_k`` best multitokens for each source, best first.

    Decoding uses ``model.generate(..., num_beams, num_return_sequences=top_k,
    max_new_tokens=L + 1)``.

    * ``decoding="constrained"`` adds ``prefix_allowed_tokens_fn=trie``, so **only multitokens
      present in ``trie`` can be returned** (an item missing from the trie can never be
      predicted). Beams that do not end as a complete valid sequence followed by EOS, and repeats
      of an earlier beam's sequence, become rows of ``-1`` at the end of the ranking (they only
      occur when fewer valid sequences than beams survive).
    * ``decoding="free"``: plain beam search over the whole vocabulary, so a beam may put a token
      of the wrong level (the vocabulary gives each level its own id range, but nothing forces
      the model to respect it), PAD or an early EOS anywhere, or a well-formed code combination
      that no entity has. A beam *names nothing* unless its first ``L`` tokens are a multitoken
      of ``trie`` and its token ``L + 1`` is EOS; such a beam, like a repeat of an earlier beam,
      becomes a ``-1`` row **in its own slot**: it is a miss and keeps its place in the ranking
      (TIGER counts invalid IDs as misses). The ``trie`` is only used to check the beams.

    :func:`hrq.seq2seq.invalid_at` is the share of ``-1`` slots.

    Args:
        model: a T5 seq2seq (PAD = decoder start = 0, EOS = 1); evaluated in eval mode, its mode
            is restored afterwards.
        sources: ``LongTensor [N, S]`` right-padded token ids, or a list of token-id lists.
        trie: the valid target token sequences (length ``L``): the constraint, or under free
            decoding the set a returned beam must belong to.
        num_beams: beam width (``>= top_k``).
        top_k: sequences returned per source.
        batch_size: sources per ``generate`` call.
        device: move the model there first; ``None`` keeps the model where it is.
        decoding: ``"constrained"`` (prefix trie) or ``"free"`` (see above).

    Returns:
        ``LongTensor [N, top_k, L]`` token ids (on the CPU), ``-1`` rows for slots that name no
        entity.
    """
    if not 1 <= top_k <= num_beams:
        raise ValueError(f"need 1 <= top_k <= num_beams, got top_k={top_k}, num_beams={num_beams}")
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    src = _as_source_tensor(sources)
    length = trie.length
    constraint = {"prefix_allowed_tokens_fn": trie} if decoding == "constrained" else {}
    dedup = (lambda b: _dedup_rows(b, top_k, length)) if decoding == "constrained" else \
        (lambda b: _dedup_in_place(b, length))
    dev = _model_device(model, device)
    # early_stopping only applies to beam search (transformers logs it as invalid for num_beams=1)
    beam_options = {"early_stopping": True} if num_beams > 1 else {}
    was_training = model.training
    model.eval()
    results: list[torch.Tensor] = []
    try:
        for start in range(0, src.shape[0], batch_size):
            input_ids, mask = _trim(src[start : start + batch_size])
            out = model.generate(
                input_ids=input_ids.to(dev),
                attention_mask=mask.to(dev),
                num_beams=num_beams,
                num_return_sequences=top_k,
                max_new_tokens=length + 1,
                do_sample=False,
                **constraint,
                **beam_options,
            ).cpu()
            body = out[:, 1:]  # drop the decoder start token
            if body.shape[1] < length + 1:  # stopped early: rows this short cannot be valid
                fill = torch.full((body.shape[0], length + 1 - body.shape[1]), PAD, dtype=body.dtype)
                body = torch.cat([body, fill], dim=1)
            seqs = body[:, :length]
            valid = torch.tensor([row in trie for row in seqs.tolist()], dtype=torch.bool)
            valid &= body[:, length] == EOS
            seqs = torch.where(valid[:, None], seqs, torch.full_like(seqs, -1))
            per_query = seqs.view(-1, top_k, length).tolist()
            results.append(torch.tensor([dedup(b) for b in per_query], dtype=torch.long)
                           .view(-1, top_k, length))
    finally:
        model.train(was_training)
    if not results:
        return torch.empty(0, top_k, length, dtype=torch.long)
    return torch.cat(results)
