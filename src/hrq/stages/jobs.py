"""Typed job specs between the workflow and the stages.

A rule builds one spec from the config and its wildcards (workflow/rules/*.smk), passes it as
JSON (:meth:`TokenizerJob.to_params`), and the stage reads it back with
:meth:`TokenizerJob.from_params`, which checks it; the stage then reads attributes, not string
keys of nested dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["TokenizerJob", "TokenizerRun", "seed_groups", "seeds_label"]


@dataclass(frozen=True)
class TokenizerRun:
    """One run of a job: its seed (and learning rate), where its files go and its MLflow child run.

    Attributes:
        seed: the run's seed (its model init, data order, negatives, k-means draws).
        outputs: the run's files, e.g. ``tokens``, ``metrics``, ``usage`` -> path.
        tracking: :func:`hrq.stages.common.job_run`'s spec (``results_dir``, ``experiment``,
            ``cell``, ``job_key``, ``run_name``), or ``None`` without MLflow.
        lr: the run's learning rate where the job stacks several (Tables 2-4's tokenizer lrs);
            ``None``: the job's ``options["lr"]``.
    """

    seed: int
    outputs: Mapping[str, str]
    tracking: Mapping[str, Any] | None = None
    lr: float | None = None


@dataclass(frozen=True)
class TokenizerJob:
    """A tokenizer job: one grid point (method, k, s, h) of a task, for one or more runs that
    train as one stack in one process: the seeds of config ``seeds_per_job``, and in Tables 2-4
    each of them at every tokenizer learning rate (``recommendation.tokenizer.stack_lrs``).

    Attributes:
        method: the method's name in the config (``rq``, ``hrq``, ...).
        method_spec: its options (``hierarchy.methods.<method>``).
        k, s, h: the grid point (``s`` one size for every level, or a per-level strategy's
            label such as ``"4-8"``, as :func:`hrq.grid.grid_s` gives).
        options: the task's tokenizer section (epochs, lr, batch size, ...).
        device: ``auto``, ``cpu`` or ``cuda``.
        runs: the runs, in order.
        logged: further MLflow parameters of every run (e.g. where item texts came from).
    """

    method: str
    method_spec: Mapping[str, Any]
    k: int
    s: int | str
    h: int
    options: Mapping[str, Any]
    device: str
    runs: tuple[TokenizerRun, ...]
    logged: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.runs:
            raise ValueError(f"tokenizer job {self.method} k={self.k} s={self.s} h={self.h} has no seeds")
        runs = [(r.seed, self.lr_of(r)) for r in self.runs]
        if len(set(runs)) != len(runs):
            raise ValueError(f"tokenizer job {self.method} k={self.k} s={self.s} h={self.h}: runs repeat "
                             f"(seed, lr): {runs}")

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def lr_of(self, run: TokenizerRun) -> float | None:
        """The run's learning rate: its own, else the job's ``options["lr"]``."""
        return run.lr if run.lr is not None else self.options.get("lr")

    def run_options(self, run: TokenizerRun) -> dict[str, Any]:
        """The options the run trains with: the job's, with the run's learning rate."""
        return {**self.options, "lr": self.lr_of(run)} if run.lr is not None else dict(self.options)

    def to_params(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (a rule's ``params``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TokenizerJob:
        """The spec back from :meth:`to_params` (an unknown or missing field is an error)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        unknown, missing = set(params) - fields, required - set(params)
        if unknown or missing:
            raise ValueError(f"tokenizer job spec: unknown fields {sorted(unknown)}, missing {sorted(missing)}")
        return cls(**{**params, "k": int(params["k"]), "h": int(params["h"]),
                      "runs": tuple(TokenizerRun(**r) for r in params["runs"])})


def seed_groups(seeds: Sequence[int], per_job: int) -> list[tuple[int, ...]]:
    """The seeds split into jobs of at most ``per_job`` seeds each, in order."""
    if per_job < 1:
        raise ValueError(f"seeds_per_job must be >= 1, got {per_job}")
    return [tuple(seeds[i : i + per_job]) for i in range(0, len(seeds), per_job)]


def seeds_label(group: Sequence[int]) -> str:
    """A seed group's name in rule and log names: ``seed3``, or ``seeds0-7`` (consecutive), or
    ``seeds0_2_5``."""
    if len(group) == 1:
        return f"seed{group[0]}"
    if list(group) == list(range(group[0], group[0] + len(group))):
        return f"seeds{group[0]}-{group[-1]}"
    return "seeds" + "_".join(map(str, group))
