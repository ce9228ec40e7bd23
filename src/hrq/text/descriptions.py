"""MovieLens item descriptions written by an LLM from the movie title (HRQ paper, App. B).

The paper generated one description per movie with Claude (3.5 Sonnet) from the title
alone, with the prompt :data:`PROMPT_TEMPLATE`. :func:`describe_items` does the same
through the Anthropic Messages API and keeps every answer in a Parquet cache, one row per
``(raw_id, model, prompt_hash)``:

* rows already in the cache are never requested again, so reruns are free and a run that
  was interrupted (crash, Ctrl-C, SDK giving up after its retries) resumes with the
  missing movies only;
* the cache holds the model's raw answer; truncation to ``max_words`` words and the
  fallback for empty answers are applied when the result frame is built, so changing
  ``max_words`` costs no request;
* a different model or prompt template gives new keys, hence new rows next to the old.

The ``template`` backend needs no network or key: it writes the sentence
:func:`template_description` from title, year and genres (and touches no cache).

``use_batches=True`` sends all uncached prompts as one Message Batch (half the price, up to
24 h latency) instead of concurrent requests; the pending batch's id is kept in a small
JSON file next to the cache so an interrupted run picks the same batch up again instead
of paying for a second one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from tqdm import tqdm

from hrq.io import read_parquet, write_json, write_parquet

if TYPE_CHECKING:
    import anthropic

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MODEL",
    "MAX_TOKENS",
    "PROMPT_TEMPLATE",
    "DescriptionRequestError",
    "build_prompt",
    "describe_items",
    "prompt_hash",
    "template_description",
]

log = logging.getLogger(__name__)

# The paper's prompt (App. B), verbatim; its line break before the second "Your task" was
# lost in the PDF's text and is restored here. The title follows after a blank line.
PROMPT_TEMPLATE = (
    "You are an expert in movie descriptions. Your task is to generate movie description that:\n"
    "- contains a maximum of 100 words\n"
    "- captures the general theme of the movie and interesting specifics of the story\n"
    "- can be used adequately in a search engine to search for a movie\n"
    "Your task is to generate a movie description for the following movie title. "
    "Return the movie description and do not return anything else.\n"
    "\n"
    "Movie title: {title}"
)

# The paper used Claude 3.5 Sonnet, which the API no longer serves; the default is the
# current Sonnet (anthropic 2.12 marks claude-sonnet-4-5 deprecated, end of life 2026-11-30).
# The model is part of the cache key: changing it requests every movie again.
DEFAULT_MODEL = "claude-sonnet-4-6"
# 100 words are ~130-150 tokens; the headroom keeps answers from being cut mid-sentence by
# the token limit (over-long answers are cut to `max_words` words instead).
MAX_TOKENS = 300
# Retries for the client built here: the SDK retries 408/409/429/5xx (529 overloaded
# included), honouring retry-after headers, else with exponential backoff from 0.5 s capped
# at 8 s: 8 retries ride out about half a minute of rate limiting or overload per request.
DEFAULT_MAX_RETRIES = 8
BACKENDS = ("anthropic", "template")

# custom_id of a Message Batch request (the API's pattern); raw_ids are used as custom_ids.
_CUSTOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TRAILING_YEAR_RE = re.compile(r"\s*\(\d{4}\)\s*$")
_NO_GENRES = "(no genres listed)"  # MovieLens's marker for an empty genre list
_CACHE_COLUMNS = ["raw_id", "model", "prompt_hash", "answer"]
_RESULT_COLUMNS = ["raw_id", "description", "model", "prompt_hash", "backend", "words", "status"]


class DescriptionRequestError(RuntimeError):
    """A description request failed for good (after the SDK's own retries, or errored in a
    Message Batch). The answers completed before it are in the cache; rerunning
    :func:`describe_items` requests only the missing movies."""


def prompt_hash(template: str = PROMPT_TEMPLATE) -> str:
    """First 16 hex digits of the SHA-256 of ``template`` (a cache key part)."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


def build_prompt(title: str, template: str = PROMPT_TEMPLATE) -> str:
    """The user message for one movie. ``title`` goes in verbatim: MovieLens titles carry
    the year (``"Toy Story (1995)"``), which tells remakes apart."""
    return template.format(title=title)


def _missing(value: Any) -> bool:
    """None, NaN or NA (but not a list-like, which ``pd.isna`` would map element-wise)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _genre_list(genres: Any) -> list[str]:
    """Genres given as MovieLens's ``"A|B"`` string or as a list-like, without empties and
    without MovieLens's ``(no genres listed)``."""
    if _missing(genres):
        return []
    parts = genres.split("|") if isinstance(genres, str) else [str(g) for g in genres]
    return [g.strip() for g in parts if g.strip() and g.strip() != _NO_GENRES]


def template_description(title: str, year: Any = None, genres: Any = None) -> str:
    """A fixed sentence from the item's metadata, e.g. ``"Toy Story is a 1995 film in the
    genres Adventure, Animation, Children."``; the year and genre parts are left out when
    missing. A trailing ``" (YYYY)"`` in ``title`` is dropped, as the sentence states it."""
    name = _TRAILING_YEAR_RE.sub("", title)
    names = _genre_list(genres)
    if _missing(year):
        sentence = f"{name} is a film"
    else:
        sentence = f"{name} is a {int(year) if isinstance(year, float) else year} film"
    if names:
        sentence += f" in the {'genre' if len(names) == 1 else 'genres'} {', '.join(names)}"
    return sentence + "."


def _check_items(items: pd.DataFrame) -> list[str]:
    """Validate ``items`` and return its raw_ids as strings (the cache's key type, stable
    whether the reader gives ints or strings)."""
    missing = {"raw_id", "title"} - set(items.columns)
    if missing:
        raise ValueError(f"items lacks column(s) {sorted(missing)}; it needs raw_id and title (year, genres optional)")
    keys = [str(r) for r in items["raw_id"]]
    dupes = pd.Index(keys)[pd.Index(keys).duplicated()].unique().tolist()
    if dupes:
        raise ValueError(f"items has duplicate raw_id(s): {dupes[:10]}")
    return keys


def _metadata(items: pd.DataFrame) -> Iterable[tuple[Any, Any, Any]]:
    """(title, year, genres) per item; the optional columns read as missing when absent."""
    absent = [None] * len(items)
    return zip(items["title"], items["year"] if "year" in items else absent,
               items["genres"] if "genres" in items else absent)


class _Cache:
    """The answers cache: ``(raw_id, model, prompt_hash) -> answer`` in a Parquet file.

    Only the caller's thread touches it. :meth:`save` rewrites the whole file atomically
    (temporary file + rename, :func:`hrq.io.write_parquet`), so a kill at any moment leaves
    the previous complete cache; rows of other models/prompts are carried over untouched.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[str, str, str], str] = {}
        self._dirty = False
        if path.exists():
            df = read_parquet(path)
            missing = set(_CACHE_COLUMNS) - set(df.columns)
            if missing:
                raise ValueError(f"description cache {str(path)!r} lacks column(s) {sorted(missing)}")
            for raw_id, model, phash, answer in df[_CACHE_COLUMNS].itertuples(index=False):
                self.rows[(raw_id, model, phash)] = answer

    def answers(self, model: str, phash: str) -> dict[str, str]:
        """The cached answers of ``model`` to the prompt ``phash``, by raw_id."""
        return {key[0]: answer for key, answer in self.rows.items() if key[1:] == (model, phash)}

    def add(self, raw_id: str, model: str, phash: str, answer: str) -> None:
        self.rows[(raw_id, model, phash)] = answer
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        df = pd.DataFrame([(*key, answer) for key, answer in self.rows.items()], columns=_CACHE_COLUMNS, dtype=str)
        write_parquet(df, self.path, index=False)
        self._dirty = False


def _text(message: Any) -> str:
    """The text of a Messages API answer (its text blocks joined), stripped."""
    return "".join(block.text for block in message.content if block.type == "text").strip()


@dataclass
class _Run:
    """The requests of one :func:`describe_items` call: a client, a model and a prompt
    template, whose answers go into ``cache`` under ``(raw_id, model, prompt hash)``."""

    client: anthropic.Anthropic
    model: str
    template: str
    cache: _Cache
    progress: bool
    phash: str = field(init=False)

    def __post_init__(self) -> None:
        self.phash = prompt_hash(self.template)

    def answers(self) -> dict[str, str]:
        return self.cache.answers(self.model, self.phash)

    def store(self, raw_id: str, answer: str) -> None:
        self.cache.add(raw_id, self.model, self.phash, answer)

    def params(self, title: str) -> dict[str, Any]:
        """Messages API parameters for one movie (direct request or batch entry)."""
        return {
            "model": self.model,
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": build_prompt(title, self.template)}],
        }

    def ask(self, raw_id: str, title: str) -> str:
        """One Messages API request; the SDK retries transient failures itself. A failure
        it gives up on is re-raised naming the movie."""
        import anthropic

        try:
            message = self.client.messages.create(**self.params(title))
        except anthropic.AnthropicError as exc:
            raise DescriptionRequestError(
                f"description request for movie {title!r} (raw_id {raw_id}) failed: {type(exc).__name__}: {exc}"
            ) from exc
        return _text(message)

    def answer(self, raw_id: str, title: str) -> str:
        """The model's answer; an empty one is asked for once more (empty answers are rare
        and usually do not repeat)."""
        return self.ask(raw_id, title) or self.ask(raw_id, title)

    def request_concurrently(self, todo: list[tuple[str, str]], max_concurrency: int, checkpoint_every: int) -> None:
        """Request ``todo`` ((raw_id, title) pairs) with at most ``max_concurrency``
        requests in flight, storing the answers as they complete.

        Threads over the sync client rather than AsyncAnthropic + semaphore: the SDK's sync
        client is thread safe (one shared connection pool), the work is I/O bound, and the
        caller (a pipeline stage, a notebook) stays free of event-loop concerns. Only this
        thread writes the cache, so it needs no lock.

        The cache is saved every ``checkpoint_every`` answers and, in ``finally``, on any
        exit: after a failure (or Ctrl-C) the queued requests are cancelled, the ones in
        flight are awaited and their answers kept too, so nothing already paid for is lost.
        """
        pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="describe")
        futures = {pool.submit(self.answer, raw_id, title): raw_id for raw_id, title in todo}
        recorded: set[Future[str]] = set()

        def record(future: Future[str]) -> None:
            self.store(futures[future], future.result())
            recorded.add(future)

        unsaved = 0
        try:
            with tqdm(total=len(futures), desc="descriptions", unit="movie", disable=not self.progress) as bar:
                for future in as_completed(futures):
                    record(future)
                    bar.update()
                    unsaved += 1
                    if unsaved >= checkpoint_every:
                        self.cache.save()
                        unsaved = 0
        finally:
            # Save first: a second Ctrl-C while waiting for the in-flight requests must not
            # lose what is already done.
            self.cache.save()
            pool.shutdown(wait=True, cancel_futures=True)
            for future in futures:
                if future not in recorded and not future.cancelled() and future.exception() is None:
                    record(future)
            self.cache.save()

    def batch_state_path(self) -> Path:
        """Where the id of a submitted, not yet stored Message Batch is kept."""
        return self.cache.path.with_name(f"{self.cache.path.stem}.{self.model}.{self.phash}.batch.json")

    def request_batch(self, todo: list[tuple[str, str]], poll_interval: float) -> None:
        """Get answers for ``todo`` through the Message Batches API and store them.

        A batch left pending by an interrupted run (its state file exists) is collected
        first; the movies still missing after it (its failures included) go into one new
        batch. Movies still without an answer at the end (errored, expired or canceled
        requests) raise :class:`DescriptionRequestError`; the other answers are cached.
        """
        state_path = self.batch_state_path()
        titles = dict(todo)
        if state_path.exists():
            batch_id = json.loads(state_path.read_text(encoding="utf-8"))["batch_id"]
            log.info("collecting Message Batch %s left pending by an earlier run", batch_id)
            self.collect_batch(batch_id, titles, poll_interval)
            state_path.unlink()
            done = self.answers()
            todo = [(raw_id, title) for raw_id, title in todo if raw_id not in done]
        if todo:
            bad = [raw_id for raw_id, _ in todo if not _CUSTOM_ID_RE.match(raw_id)]
            if bad:
                raise ValueError(f"raw_ids {bad[:5]} do not fit a Message Batch custom_id (^[A-Za-z0-9_-]{{1,64}}$)")
            batch = self.client.messages.batches.create(
                requests=[{"custom_id": raw_id, "params": self.params(title)} for raw_id, title in todo]
            )
            # Logged at once: should the state file not get written, the id is here.
            log.info("submitted Message Batch %s with %d requests", batch.id, len(todo))
            write_json({"batch_id": batch.id, "model": self.model, "prompt_hash": self.phash}, state_path)
            self.collect_batch(batch.id, titles, poll_interval)
            state_path.unlink()
        done = self.answers()
        failed = [raw_id for raw_id in titles if raw_id not in done]
        if failed:
            names = ", ".join(f"{titles[r]!r} (raw_id {r})" for r in failed[:10])
            raise DescriptionRequestError(
                f"{len(failed)} Message Batch request(s) failed, e.g. {names}; the other answers are "
                "cached and a rerun requests only the missing movies"
            )

    def collect_batch(self, batch_id: str, titles: Mapping[str, str], poll_interval: float) -> None:
        """Wait for batch ``batch_id`` to end and store its answers; ask for its empty
        answers once more directly. The cache is saved before returning, i.e. before the
        caller drops the batch's state file.

        Answers for raw_ids outside ``titles`` (a pending batch from a run over other
        items) are stored when non-empty and otherwise ignored: without a title they
        cannot be asked again, and they are not wanted now."""
        batches = self.client.messages.batches
        batch = batches.retrieve(batch_id)
        while batch.processing_status != "ended":
            log.info("Message Batch %s: %s, %d processing", batch_id, batch.processing_status,
                     batch.request_counts.processing)
            time.sleep(poll_interval)
            batch = batches.retrieve(batch_id)
        empty: list[str] = []
        with tqdm(total=batch.request_counts.succeeded, desc=f"batch {batch_id}", unit="movie",
                  disable=not self.progress) as bar:
            for line in batches.results(batch_id):
                if line.result.type != "succeeded":
                    log.warning("Message Batch %s: request %s %s", batch_id, line.custom_id, line.result.type)
                    continue
                bar.update()
                if answer := _text(line.result.message):
                    self.store(line.custom_id, answer)
                elif line.custom_id in titles:
                    empty.append(line.custom_id)
        try:
            for raw_id in empty:
                self.store(raw_id, self.ask(raw_id, titles[raw_id]))
        finally:
            self.cache.save()


def _make_client(client: anthropic.Anthropic | None, max_retries: int | None) -> contextlib.AbstractContextManager:
    """A context manager yielding the client to use: the caller's (with ``max_retries``
    applied when given, not closed here) or a new one that is closed afterwards."""
    if client is not None:
        return contextlib.nullcontext(client if max_retries is None else client.with_options(max_retries=max_retries))
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise RuntimeError(
            "LLM descriptions (backend 'anthropic') need an Anthropic API key: set the environment "
            "variable ANTHROPIC_API_KEY, or choose `descriptions: {backend: template}` in the config "
            "to describe items with a template sentence (no network, no key)"
        )
    import anthropic

    return anthropic.Anthropic(max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries)


def _template_frame(items: pd.DataFrame) -> pd.DataFrame:
    """The template backend's result: :func:`template_description` for every item."""
    descriptions = [template_description(*meta) for meta in _metadata(items)]
    return pd.DataFrame({
        "raw_id": items["raw_id"].to_numpy(),
        "description": descriptions,
        "model": "template",
        "prompt_hash": "",  # no prompt
        "backend": "template",
        "words": pd.array([len(d.split()) for d in descriptions], dtype="int64"),
        "status": "ok",
    })[_RESULT_COLUMNS]


def _result_frame(
    items: pd.DataFrame, keys: Iterable[str], answers: Mapping[str, str], model: str, phash: str, max_words: int
) -> pd.DataFrame:
    """One row per item from the cached answers: truncation and empty-answer fallback."""
    descriptions, words, status = [], [], []
    for key, meta in zip(keys, _metadata(items)):
        tokens = answers[key].split()
        words.append(len(tokens))
        if not tokens:
            descriptions.append(template_description(*meta))
            status.append("empty")
        elif len(tokens) > max_words:
            descriptions.append(" ".join(tokens[:max_words]))
            status.append("truncated")
        else:
            descriptions.append(answers[key])
            status.append("ok")
    return pd.DataFrame({
        "raw_id": items["raw_id"].to_numpy(),
        "description": descriptions,
        "model": model,
        "prompt_hash": phash,
        "backend": "anthropic",
        "words": pd.array(words, dtype="int64"),
        "status": status,
    })[_RESULT_COLUMNS]


def describe_items(
    items: pd.DataFrame,
    cache_path: str | os.PathLike[str],
    *,
    backend: str = "anthropic",
    model: str = DEFAULT_MODEL,
    prompt_template: str = PROMPT_TEMPLATE,
    max_concurrency: int = 8,
    max_retries: int | None = None,
    client: anthropic.Anthropic | None = None,
    max_words: int = 100,
    progress: bool = True,
    use_batches: bool = False,
    checkpoint_every: int = 50,
    poll_interval: float = 60.0,
) -> pd.DataFrame:
    """A description per item, from the LLM (cached) or a template sentence.

    Args:
        items: one row per movie with ``raw_id`` and ``title`` (the title goes into the
            prompt verbatim), and optionally ``year`` and ``genres`` (``"A|B"`` or a list;
            used by the template sentence, the ``template`` backend and the empty-answer
            fallback).
        cache_path: the Parquet answers cache (created if missing; see the module doc).
        backend: ``"anthropic"`` (Messages API) or ``"template"`` (no network, no cache).
        model: the Anthropic model; part of the cache key.
        prompt_template: the prompt, with a ``{title}`` field; its :func:`prompt_hash` is
            part of the cache key.
        max_concurrency: requests in flight at once.
        max_retries: SDK retries per request (429, 529 overloaded, 5xx, timeouts). ``None``
            means :data:`DEFAULT_MAX_RETRIES` for the client built here, and the passed
            ``client``'s own setting otherwise.
        client: an ``anthropic.Anthropic`` to use instead of one built from
            ``ANTHROPIC_API_KEY`` (tests, custom base URL or HTTP client).
        max_words: answers longer than this are cut to their first ``max_words`` words.
        progress: show a tqdm progress bar.
        use_batches: use the Message Batches API instead of concurrent requests.
        checkpoint_every: save the cache after this many new answers (and always at the end
            or on failure).
        poll_interval: seconds between status polls of a Message Batch.

    Returns:
        One row per item, in ``items``' order: ``raw_id`` (as in ``items``),
        ``description``, ``model`` and ``prompt_hash`` (``"template"`` and ``""`` for the
        template backend), ``backend``, ``words`` (words in the
        model's answer, before truncation; in the sentence for the template backend) and
        ``status``: ``"ok"``, ``"truncated"`` (over ``max_words``) or ``"empty"`` (empty
        twice; the template sentence stands in). The counts per status are logged.

    Raises:
        RuntimeError: requests are needed, no ``client`` is given and ANTHROPIC_API_KEY is
            unset.
        DescriptionRequestError: a request failed after the SDK's retries (or errored in a
            batch); the answers completed before are in the cache.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown descriptions backend {backend!r}; choose one of {BACKENDS}")
    keys = _check_items(items)
    if backend == "template":
        return _template_frame(items)

    phash = prompt_hash(prompt_template)
    cache = _Cache(Path(cache_path))
    answers = cache.answers(model, phash)
    todo = [(key, title) for key, title in zip(keys, items["title"]) if key not in answers]
    log.info("descriptions (%s): %d cached, %d to request", model, len(keys) - len(todo), len(todo))
    if todo:
        # The key is checked only now: a fully cached run needs neither key nor network.
        with _make_client(client, max_retries) as api:
            run = _Run(api, model, prompt_template, cache, progress)
            if use_batches:
                run.request_batch(todo, poll_interval)
            else:
                run.request_concurrently(todo, max_concurrency, checkpoint_every)
        answers = cache.answers(model, phash)

    out = _result_frame(items, keys, answers, model, phash, max_words)
    counts = out["status"].value_counts()
    log.info("descriptions (%s): %d ok, %d truncated to %d words, %d empty (template fallback)", model,
             counts.get("ok", 0), counts.get("truncated", 0), max_words, counts.get("empty", 0))
    return out
