"""Refusing bad numbers: non-finite inputs and losses stop a job with a message that says where.

A NaN row given to a quantizer in eval mode would otherwise get a valid-looking code (argmin over
NaN distances is 0), and one NaN in a k-means sample turns every centroid into NaN; a diverged
loss would train on silently and write tokens. Both checks are cheap:

* :func:`require_finite` reads one boolean back from the device; it guards inputs that are
  checked once (evaluation, k-means samples), not every training step.
* :class:`LossMonitor` keeps the first non-finite step of an epoch *on the device*, so a training
  loop pays no host-device synchronisation per step; :meth:`LossMonitor.check` reads it once at
  the end of the epoch and raises :class:`NonFiniteError` naming the epoch and step.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["LossMonitor", "NonFiniteError", "require_finite"]


class NonFiniteError(FloatingPointError):
    """A tensor that must be finite holds NaN or inf (an input, a loss)."""


def require_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` if ``x [N, ...]`` has a NaN or inf entry, naming ``what``,
    the shape, how many rows are bad and the first of them."""
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return
    bad_rows = (~finite).reshape(x.shape[0], -1).any(dim=1) if x.ndim > 0 else (~finite).reshape(1)
    rows = torch.nonzero(bad_rows).flatten()
    kinds = [name for name, mask in (("NaN", torch.isnan(x)), ("inf", torch.isinf(x))) if bool(mask.any())]
    raise NonFiniteError(f"{what}: {rows.numel()} of {bad_rows.numel()} rows of a tensor of shape "
                         f"{tuple(x.shape)} hold {' and '.join(kinds)} (first bad row: {int(rows[0])})")


class LossMonitor:
    """Finds the first non-finite loss of each epoch without a per-step device sync.

    Usage in a training loop::

        monitor = LossMonitor()
        for epoch in range(epochs):
            monitor.start_epoch(epoch)
            for step, batch in enumerate(batches):
                loss = ...
                monitor.observe(loss, step)
            monitor.check()      # raises NonFiniteError("epoch 3, step 17: loss is nan")
    """

    def __init__(self, runs: Sequence[str] | None = None) -> None:
        self._runs = list(runs) if runs is not None else None
        self._epoch = 0
        self._first_bad: torch.Tensor | None = None  # step index per run, -1 while all finite
        self._value: torch.Tensor | None = None

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self._first_bad = None
        self._value = None

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Record ``loss`` of step ``step``: a scalar, or ``[R]`` per-run losses of stacked runs
        (``runs`` names them); stays on the loss's device."""
        loss = loss.detach()
        if self._first_bad is None:
            self._first_bad = torch.full(loss.shape, -1, dtype=torch.long, device=loss.device)
            self._value = torch.zeros(loss.shape, dtype=loss.dtype, device=loss.device)
        new = (self._first_bad < 0) & ~torch.isfinite(loss)
        self._first_bad = torch.where(new, torch.full_like(self._first_bad, step), self._first_bad)
        self._value = torch.where(new, loss, self._value)

    def check(self) -> None:
        """Raise :class:`NonFiniteError` if a step of this epoch had a non-finite loss (one sync);
        for stacked runs it names the first run that diverged."""
        if self._first_bad is None:
            return
        first_bad = self._first_bad.flatten().tolist()
        for run, step in enumerate(first_bad):
            if step >= 0:
                where = f"{self._runs[run]}, " if self._runs is not None else ""
                err = NonFiniteError(f"{where}epoch {self._epoch + 1}, step {step + 1}: the training loss is "
                                     f"{float(self._value.flatten()[run])} (diverged, or a non-finite input)")
                err.run = run  # which of stacked runs (hrq.stages.common.job_runs names it)
                raise err
