"""LLM movie descriptions (hrq.text.descriptions) against a mock Anthropic API.

Every request goes through the real SDK (``anthropic.Anthropic``) over an
``httpx2.MockTransport``, so the SDK's own retry loop, error classes and response parsing
are exercised. Error responses carry ``retry-after-ms: 1``, which the SDK honours
instead of its exponential backoff, so retries cost a millisecond.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable

import anthropic
import httpx2
import pandas as pd
import pytest

from hrq.io import read_parquet
from hrq.text.descriptions import (
    DEFAULT_MODEL,
    MAX_TOKENS,
    PROMPT_TEMPLATE,
    DescriptionRequestError,
    build_prompt,
    describe_items,
    prompt_hash,
    template_description,
)

# anthropic 2.12 warns that DEFAULT_MODEL (claude-sonnet-4-5) is deprecated on every
# request; pyproject turns warnings into errors. The warning is about the model choice,
# not about this code, so it is ignored here (whatever model DEFAULT_MODEL names).
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

# The paper's prompt (App. B), written out here so that an edit of PROMPT_TEMPLATE shows.
PAPER_PROMPT = (
    "You are an expert in movie descriptions. Your task is to generate movie description that:\n"
    "- contains a maximum of 100 words\n"
    "- captures the general theme of the movie and interesting specifics of the story\n"
    "- can be used adequately in a search engine to search for a movie\n"
    "Your task is to generate a movie description for the following movie title. "
    "Return the movie description and do not return anything else."
)

ITEMS = pd.DataFrame({
    "raw_id": [1, 2, 3],
    "title": ["Toy Story (1995)", "Jumanji (1995)", "Heat (1995)"],
    "year": [1995, 1995, 1995],
    "genres": ["Adventure|Animation|Children", "Adventure|Children|Fantasy", "Action|Crime|Thriller"],
})


def many_items(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "raw_id": list(range(100, 100 + n)),
        "title": [f"Movie {i} (2000)" for i in range(n)],
        "year": [2000] * n,
        "genres": ["Drama"] * n,
    })


def message_json(text: str, model: str = DEFAULT_MODEL) -> dict:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def error_response(status: int, kind: str) -> httpx2.Response:
    return httpx2.Response(
        status, headers={"retry-after-ms": "1"}, json={"type": "error", "error": {"type": kind, "message": kind}}
    )


def answer_for(title: str) -> str:
    return f"A description of {title}."


def unexpected(title: str, attempt: int) -> str:
    raise AssertionError(f"unexpected request for {title!r}")


class FakeAPI:
    """The Messages API: checks each request, records its title, answers with
    ``respond(title, attempt)`` (attempt counts from 1 per title): a str is the answer
    text, an ``httpx2.Response`` is returned as is."""

    def __init__(self, respond: Callable[[str, int], str | httpx2.Response] | None = None,
                 model: str = DEFAULT_MODEL) -> None:
        self.respond = respond or (lambda title, attempt: answer_for(title))
        self.model = model
        self.titles: list[str] = []
        self._lock = threading.Lock()  # the SDK calls the transport from several threads

    def attempts(self) -> Counter:
        return Counter(self.titles)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/messages")
        return self.message(json.loads(request.content))

    def message(self, body: dict) -> httpx2.Response:
        assert body["model"] == self.model
        assert body["max_tokens"] == MAX_TOKENS
        [msg] = body["messages"]
        assert msg["role"] == "user"
        prefix = PAPER_PROMPT + "\n\nMovie title: "
        assert msg["content"].startswith(prefix)
        title = msg["content"][len(prefix):]
        with self._lock:
            self.titles.append(title)
            attempt = self.titles.count(title)
        reply = self.respond(title, attempt)
        if isinstance(reply, httpx2.Response):
            return reply
        return httpx2.Response(200, json=message_json(reply, body["model"]))


@pytest.fixture
def make_client():
    """``make_client(handler, max_retries=2)``: a real SDK client over a mock transport."""
    http_clients: list[httpx2.Client] = []

    def make(handler: Callable[[httpx2.Request], httpx2.Response], max_retries: int = 2) -> anthropic.Anthropic:
        http = httpx2.Client(transport=httpx2.MockTransport(handler))
        http_clients.append(http)
        return anthropic.Anthropic(api_key="test", http_client=http, max_retries=max_retries)

    yield make
    for http in http_clients:
        http.close()


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


# --- prompt and template ---------------------------------------------------------------


def test_prompt_is_the_papers_with_the_title_after_a_blank_line():
    assert PROMPT_TEMPLATE == PAPER_PROMPT + "\n\nMovie title: {title}"
    assert build_prompt("Heat (1995)") == PAPER_PROMPT + "\n\nMovie title: Heat (1995)"
    h = prompt_hash()
    assert len(h) == 16 and int(h, 16) >= 0
    assert h == prompt_hash(PROMPT_TEMPLATE) != prompt_hash(PROMPT_TEMPLATE + " ")


def test_template_description():
    assert (template_description("Toy Story (1995)", 1995, "Adventure|Animation|Children")
            == "Toy Story is a 1995 film in the genres Adventure, Animation, Children.")
    assert template_description("Heat", 1995.0, ["Crime"]) == "Heat is a 1995 film in the genre Crime."
    assert template_description("Heat", None, "(no genres listed)") == "Heat is a film."
    assert template_description("Heat", pd.NA, float("nan")) == "Heat is a film."


# --- the anthropic backend -------------------------------------------------------------


def test_success(tmp_path, make_client):
    api = FakeAPI()
    cache = tmp_path / "descriptions.parquet"
    out = describe_items(ITEMS, cache, client=make_client(api), progress=True)

    assert list(out.columns) == ["raw_id", "description", "model", "prompt_hash", "backend", "words", "status"]
    assert out["raw_id"].tolist() == [1, 2, 3]  # the items' ids, order and type
    assert out["description"].tolist() == [answer_for(t) for t in ITEMS["title"]]
    assert out["words"].tolist() == [6, 5, 5]
    assert set(out["status"]) == {"ok"} and set(out["backend"]) == {"anthropic"}
    assert set(out["model"]) == {DEFAULT_MODEL} and set(out["prompt_hash"]) == {prompt_hash()}
    assert sorted(api.titles) == sorted(ITEMS["title"])

    stored = read_parquet(cache)
    assert sorted(stored["raw_id"]) == ["1", "2", "3"]
    assert set(stored["model"]) == {DEFAULT_MODEL} and set(stored["prompt_hash"]) == {prompt_hash()}


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error")])
def test_rate_limit_and_overload_are_retried_by_the_sdk(tmp_path, make_client, status, kind):
    api = FakeAPI(lambda title, attempt: error_response(status, kind) if attempt == 1 else answer_for(title))
    out = describe_items(ITEMS.iloc[:1], tmp_path / "c.parquet", client=make_client(api, max_retries=2),
                         progress=False)
    assert api.attempts() == {"Toy Story (1995)": 2}
    assert out["description"].tolist() == [answer_for("Toy Story (1995)")]


def test_too_long_answer_is_truncated_and_counted(tmp_path, make_client, caplog):
    long_answer = " ".join(f"w{i}" for i in range(130))
    api = FakeAPI(lambda title, attempt: long_answer if title == "Jumanji (1995)" else answer_for(title))
    cache = tmp_path / "c.parquet"
    with caplog.at_level("INFO", logger="hrq.text.descriptions"):
        out = describe_items(ITEMS, cache, client=make_client(api), progress=False)
    row = out.set_index("raw_id").loc[2]
    assert row["status"] == "truncated" and row["words"] == 130
    assert row["description"] == " ".join(f"w{i}" for i in range(100))
    assert "2 ok, 1 truncated to 100 words, 0 empty" in caplog.text

    # The cache holds the whole answer: another word limit needs no request.
    again = describe_items(ITEMS, cache, client=make_client(FakeAPI(unexpected)), max_words=200, progress=False)
    assert again.set_index("raw_id").loc[2, "description"] == long_answer
    assert set(again["status"]) == {"ok"}


def test_empty_answer_is_retried_once_then_falls_back_to_the_template(tmp_path, make_client, caplog):
    def respond(title, attempt):
        if title == "Toy Story (1995)":
            return "  "  # empty twice
        if title == "Jumanji (1995)" and attempt == 1:
            return ""  # empty once
        return answer_for(title)

    api = FakeAPI(respond)
    with caplog.at_level("INFO", logger="hrq.text.descriptions"):
        out = describe_items(ITEMS, tmp_path / "c.parquet", client=make_client(api), progress=False)
    assert api.attempts() == {"Toy Story (1995)": 2, "Jumanji (1995)": 2, "Heat (1995)": 1}
    by_id = out.set_index("raw_id")
    assert by_id.loc[1, "status"] == "empty" and by_id.loc[1, "words"] == 0
    assert by_id.loc[1, "description"] == "Toy Story is a 1995 film in the genres Adventure, Animation, Children."
    assert by_id.loc[2, "status"] == "ok" and by_id.loc[2, "description"] == answer_for("Jumanji (1995)")
    assert "2 ok, 0 truncated to 100 words, 1 empty" in caplog.text


def test_persistent_server_error_raises_after_the_retries_and_keeps_earlier_answers(tmp_path, make_client):
    api = FakeAPI(lambda title, attempt: error_response(500, "api_error") if title == "Jumanji (1995)"
                  else answer_for(title))
    cache = tmp_path / "c.parquet"
    # describe_items' max_retries overrides the client's own setting (5).
    with pytest.raises(DescriptionRequestError, match=r"Jumanji \(1995\)") as info:
        describe_items(ITEMS, cache, client=make_client(api, max_retries=5), max_retries=1, max_concurrency=1,
                       progress=False)
    assert isinstance(info.value.__cause__, anthropic.InternalServerError)
    assert api.attempts()["Jumanji (1995)"] == 2  # 1 + max_retries
    stored = set(read_parquet(cache)["raw_id"])
    assert "1" in stored and "2" not in stored


def test_resume_after_a_crash_requests_only_the_missing_titles(tmp_path, make_client):
    items = many_items(20)
    failing = {"Movie 5 (2000)", "Movie 12 (2000)"}
    first = FakeAPI(lambda title, attempt: error_response(500, "api_error") if title in failing
                    else answer_for(title))
    cache = tmp_path / "c.parquet"
    # No checkpoint before the crash: the answers must survive through the `finally` save.
    with pytest.raises(DescriptionRequestError):
        describe_items(items, cache, client=make_client(first, max_retries=0), max_concurrency=4,
                       checkpoint_every=1000, progress=False)
    by_id = dict(zip(items["raw_id"].astype(str), items["title"]))
    stored = {by_id[r] for r in read_parquet(cache)["raw_id"]}
    answered = {t for t in first.titles if t not in failing}
    assert stored == answered  # every completed answer was kept, in-flight ones included
    assert stored and not stored & failing

    second = FakeAPI()
    out = describe_items(items, cache, client=make_client(second), max_concurrency=4, progress=False)
    assert sorted(second.titles) == sorted(set(items["title"]) - stored)  # each once, none cached
    assert failing <= set(second.titles)
    assert out["description"].tolist() == [answer_for(t) for t in items["title"]]
    assert len(read_parquet(cache)) == 20


def test_cache_is_checkpointed_during_the_run(tmp_path, make_client):
    items = many_items(6)
    cache = tmp_path / "c.parquet"
    on_disk: dict[int, int] = {}

    def rows_on_disk() -> int:
        return len(read_parquet(cache)) if cache.exists() else 0

    def respond(title, attempt):
        # What a kill during request k would leave: the cache as last saved. The main
        # thread saves after the worker has moved on, so wait (briefly) for the checkpoint.
        k = len(api.titles)
        deadline = time.monotonic() + 5
        while rows_on_disk() < 2 * ((k - 1) // 2) and time.monotonic() < deadline:
            time.sleep(0.002)
        on_disk[k] = rows_on_disk()
        return answer_for(title)

    api = FakeAPI(respond)
    describe_items(items, cache, client=make_client(api), max_concurrency=1, checkpoint_every=2, progress=False)
    assert on_disk == {1: 0, 2: 0, 3: 2, 4: 2, 5: 4, 6: 4}
    assert len(read_parquet(cache)) == 6


def test_fully_cached_rerun_makes_no_request_and_needs_no_key(tmp_path, make_client, no_key):
    cache = tmp_path / "c.parquet"
    first = describe_items(ITEMS, cache, client=make_client(FakeAPI()), progress=False)
    again = describe_items(ITEMS, cache, client=make_client(FakeAPI(unexpected)), progress=False)
    pd.testing.assert_frame_equal(first, again)
    without_client = describe_items(ITEMS, cache, progress=False)
    pd.testing.assert_frame_equal(first, without_client)


def test_another_model_or_prompt_adds_rows(tmp_path, make_client):
    cache = tmp_path / "c.parquet"
    describe_items(ITEMS, cache, client=make_client(FakeAPI()), progress=False)

    other_model = FakeAPI(lambda title, attempt: "Other model.", model="claude-haiku-4-5")
    out = describe_items(ITEMS, cache, model="claude-haiku-4-5", client=make_client(other_model), progress=False)
    assert len(other_model.titles) == 3 and set(out["description"]) == {"Other model."}

    class OtherPrompt(FakeAPI):
        def message(self, body):
            content = body["messages"][0]["content"]
            assert content.startswith("Describe: ")
            self.titles.append(content)
            return httpx2.Response(200, json=message_json("Other prompt.", body["model"]))

    other_prompt = OtherPrompt()
    out = describe_items(ITEMS, cache, prompt_template="Describe: {title}", client=make_client(other_prompt),
                         progress=False)
    assert len(other_prompt.titles) == 3 and set(out["description"]) == {"Other prompt."}
    assert set(out["prompt_hash"]) == {prompt_hash("Describe: {title}")}

    stored = read_parquet(cache)
    assert len(stored) == 9
    assert stored.groupby(["model", "prompt_hash"]).size().tolist() == [3, 3, 3]
    # The first rows are still there and still served without requests.
    out = describe_items(ITEMS, cache, client=make_client(FakeAPI(unexpected)), progress=False)
    assert out["description"].tolist() == [answer_for(t) for t in ITEMS["title"]]


def test_template_backend_needs_no_key_and_no_cache(tmp_path, no_key):
    cache = tmp_path / "c.parquet"
    out = describe_items(ITEMS, cache, backend="template")
    assert out["description"].tolist() == [
        "Toy Story is a 1995 film in the genres Adventure, Animation, Children.",
        "Jumanji is a 1995 film in the genres Adventure, Children, Fantasy.",
        "Heat is a 1995 film in the genres Action, Crime, Thriller.",
    ]
    assert set(out["backend"]) == {"template"} and set(out["status"]) == {"ok"}
    assert out["words"].tolist() == [12, 11, 11]
    assert not cache.exists()


def test_missing_key_says_how_to_fix_it(tmp_path, no_key):
    with pytest.raises(RuntimeError, match="ANTHROPIC_API_KEY") as info:
        describe_items(ITEMS, tmp_path / "c.parquet", progress=False)
    assert "`descriptions: {backend: template}`" in str(info.value)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        describe_items(ITEMS, tmp_path / "c.parquet", backend="openai")
    with pytest.raises(ValueError, match="duplicate raw_id"):
        describe_items(pd.concat([ITEMS, ITEMS]), tmp_path / "c.parquet", backend="template")
    with pytest.raises(ValueError, match="title"):
        describe_items(ITEMS.drop(columns="title"), tmp_path / "c.parquet", backend="template")


# --- the Message Batches API -----------------------------------------------------------


class FakeBatchAPI(FakeAPI):
    """Message Batches endpoints over :class:`FakeAPI`: a created batch is "in_progress"
    for its first ``polls`` retrieves, then "ended" with results from ``respond`` (a
    ``"!errored"`` answer makes an errored result)."""

    def __init__(self, respond=None, polls: int = 1, fail_retrieve: bool = False) -> None:
        super().__init__(respond)
        self.polls = polls
        self.fail_retrieve = fail_retrieve
        self.created: list[list[dict]] = []
        self.retrieves = 0

    def batch_json(self, batch_id: str) -> dict:
        ended = self.retrieves > self.polls
        n = len(self.created[-1]) if self.created else 0
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0,
                               "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2026-11-22T00:00:00Z",
            "expires_at": "2026-11-23T00:00:00Z",
            "ended_at": "2026-11-22T01:00:00Z" if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"https://api.anthropic.com/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def result_line(self, request: dict) -> dict:
        reply = self.message(request["params"])
        answer = json.loads(reply.content)["content"][0]["text"]
        if answer == "!errored":
            result = {"type": "errored",
                      "error": {"type": "error", "error": {"type": "api_error", "message": "boom"}}}
        else:
            result = {"type": "succeeded", "message": message_json(answer)}
        return {"custom_id": request["custom_id"], "result": result}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if path == "/v1/messages":
            return super().__call__(request)
        if request.method == "POST" and path == "/v1/messages/batches":
            self.created.append(json.loads(request.content)["requests"])
            self.retrieves = 0
            return httpx2.Response(200, json=self.batch_json(f"msgbatch_{len(self.created)}"))
        batch_id = path.split("/")[4]
        if path.endswith("/results"):
            lines = [json.dumps(self.result_line(r)) for r in self.created[int(batch_id.split("_")[1]) - 1]]
            return httpx2.Response(200, content="\n".join(lines).encode())
        if self.fail_retrieve:
            return error_response(500, "api_error")
        self.retrieves += 1
        return httpx2.Response(200, json=self.batch_json(batch_id))


def test_batches_submit_poll_and_store(tmp_path, make_client):
    def respond(title, attempt):
        return "" if title == "Heat (1995)" and attempt == 1 else answer_for(title)

    api = FakeBatchAPI(respond, polls=2)
    cache = tmp_path / "c.parquet"
    out = describe_items(ITEMS, cache, client=make_client(api), use_batches=True, poll_interval=0, progress=False)

    [requests] = api.created
    assert [r["custom_id"] for r in requests] == ["1", "2", "3"]
    assert requests[0]["params"] == {"model": DEFAULT_MODEL, "max_tokens": MAX_TOKENS,
                                     "messages": [{"role": "user", "content": build_prompt("Toy Story (1995)")}]}
    # Heat's empty batch answer was asked for again with a direct request.
    assert api.attempts() == {"Toy Story (1995)": 1, "Jumanji (1995)": 1, "Heat (1995)": 2}
    assert out["description"].tolist() == [answer_for(t) for t in ITEMS["title"]]
    assert set(out["status"]) == {"ok"}
    assert len(read_parquet(cache)) == 3
    assert list(tmp_path.glob("*.batch.json")) == []  # the batch's state file is gone


def test_batches_errored_requests_raise_and_are_resubmitted_on_rerun(tmp_path, make_client):
    api = FakeBatchAPI(lambda title, attempt: "!errored" if title == "Jumanji (1995)" else answer_for(title))
    cache = tmp_path / "c.parquet"
    with pytest.raises(DescriptionRequestError, match=r"1 Message Batch request\(s\) failed.*Jumanji"):
        describe_items(ITEMS, cache, client=make_client(api), use_batches=True, poll_interval=0, progress=False)
    assert sorted(read_parquet(cache)["raw_id"]) == ["1", "3"]

    again = FakeBatchAPI()
    describe_items(ITEMS, cache, client=make_client(again), use_batches=True, poll_interval=0, progress=False)
    assert [[r["custom_id"] for r in requests] for requests in again.created] == [["2"]]
    assert len(read_parquet(cache)) == 3


def test_batches_an_interrupted_run_collects_its_pending_batch(tmp_path, make_client):
    cache = tmp_path / "c.parquet"
    crashing = FakeBatchAPI(fail_retrieve=True)
    with pytest.raises(anthropic.InternalServerError):
        describe_items(ITEMS, cache, client=make_client(crashing, max_retries=0), use_batches=True,
                       poll_interval=0, progress=False)
    assert len(crashing.created) == 1
    [state] = tmp_path.glob("*.batch.json")
    assert json.loads(state.read_text())["batch_id"] == "msgbatch_1"

    # The same batch, now ended: collected, not submitted again.
    resumed = FakeBatchAPI()
    resumed.created = crashing.created
    resumed.retrieves = 10
    out = describe_items(ITEMS, cache, client=make_client(resumed), use_batches=True, poll_interval=0,
                         progress=False)
    assert len(resumed.created) == 1
    assert out["description"].tolist() == [answer_for(t) for t in ITEMS["title"]]
    assert not state.exists()
