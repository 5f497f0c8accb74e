"""Answers as they are written: the loopback model streams its reply a word at a time; the worker writes the answer
so far to the request in Firestore at a bounded rate, under its claim; the web page (Chromium) and the Slack reply
(the loopback Slack API) show it growing; a stream cut off mid-way is retried whole or ends ``failed``, never as a
half answer."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest

from askflow.adapters.memory import InMemoryRequestStore
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import Request, RequestStatus, SlackThread, Source
from askflow.service_layer import handlers
from tests.support.loopback_apis import SlackAPI
from tests.test_ask_path import _settings, indexed  # noqa: F401 - the indexed docs fixture
from tests.test_slack_bot import SECRET, event, post, wait_for
from tests.test_web_page import browser, page  # noqa: F401 - Chromium, at phone width

SENTENCE = "According to the documentation, this is how it works [1][2]."
INTERVAL_S = 1.0  # the default partial_write_interval_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingSlack:
    def __init__(self) -> None:
        self.edits: list[str] = []

    def edit_reply(self, request, text):
        self.edits.append(text)


def test_a_thousand_chunks_cost_a_handful_of_writes_and_the_first_text_is_written_at_once():
    requests, clock, slack = InMemoryRequestStore(), FakeClock(), RecordingSlack()
    thread = SlackThread(channel="C1", ts="1.1", thread_ts="1.1", reply_ts="2.2")
    requests.create(Request(request_id="r1", question="q", created_at=utcnow(), slack=thread))
    claimed = requests.claim("r1", lease_s=60)
    partial = handlers.PartialAnswers(claimed, requests=requests, slack=slack, settings=Settings(), clock=clock)
    source = Source(n=1, title="t", url="u")

    partial("A", [source])
    assert requests.get("r1").partial_answer == "A" and partial.writes == 1  # at once, not after an interval
    text = "A"
    for _ in range(999):  # 1,000 chunks over 2.5 s
        clock.now += 0.0025
        text += " w"
        partial(text, [source])
    assert partial.writes <= 1 + clock.now / INTERVAL_S
    assert partial.writes >= clock.now / INTERVAL_S - 1  # and still written as it grows
    assert len(slack.edits) <= 1 + clock.now / 1.0  # Slack: at most an edit a second
    stored = requests.get("r1")
    assert stored.partial_answer.startswith("A w w") and stored.sources == [source]


def test_a_worker_that_lost_its_claim_writes_no_partial_text(local_stack):
    with bootstrap(Settings(requests_collection="requests_stream_claims")) as components:
        requests = components.requests
        requests.create(Request(request_id="lost-1", question="q", created_at=utcnow()))
        first = requests.claim("lost-1", lease_s=60)
        second = requests.claim("lost-1", lease_s=0)  # the first worker's lease ran out; another claimed
        assert (first.attempts, second.attempts) == (1, 2)
        stale = handlers.PartialAnswers(first, requests=requests, slack=None, settings=components.settings)
        stale("stale words", [])
        assert stale.claim_lost and requests.get("lost-1").partial_answer is None
        live = handlers.PartialAnswers(second, requests=requests, slack=None, settings=components.settings)
        live("fresh words", [])
        assert not live.claim_lost and requests.get("lost-1").partial_answer == "fresh words"
        stale("stale again", [])
        assert requests.get("lost-1").partial_answer == "fresh words"


class CountingStore:
    """The Firestore request store, counting the worker's writes and when each partial answer was written."""

    def __init__(self, store) -> None:
        self._store = store
        self.writes: dict[str, int] = {}
        self.partials: list[tuple[float, str]] = []

    def __getattr__(self, name):
        method = getattr(self._store, name)
        if name not in ("claim", "heartbeat", "progress", "finish"):
            return method

        def counted(*args, **kwargs):
            self.writes[name] = self.writes.get(name, 0) + 1
            if name == "progress":
                self.partials.append((time.monotonic(), args[0].partial_answer))
            return method(*args, **kwargs)

        return counted


_ids = itertools.count()


@pytest.fixture
def streaming_worker(local_stack, indexed, pg_url, wire):  # noqa: F811
    settings = _settings(pg_url, "stream-worker", openai_base_url=wire.base_url, openai_api_key="k",
                         cheap_model="loopback-cheap", strong_model="loopback-strong", llm_max_attempts=3,
                         llm_backoff_max_s=0.05, llm_timeout_s=5.0, requests_collection="requests_streaming")
    with bootstrap(settings) as components:
        store = CountingStore(components.requests)

        def answer(question: str) -> tuple[Request, CountingStore, float]:
            request_id = f"stream-{next(_ids)}"
            components.requests.create(Request(request_id=request_id, question=question, created_at=utcnow()))
            started = time.monotonic()
            handlers.answer_request(QuestionQueued(request_id=request_id), requests=store,
                                    answerer=components.answerer, settings=settings)
            return components.requests.get(request_id), store, started

        yield answer


def test_the_answer_is_written_as_it_grows_within_the_write_bound(streaming_worker, wire):
    wire.answer_sentences, wire.token_interval_s = 24, 0.025  # 216 chunks over about 5.4 s
    record, store, started = streaming_worker("How do tasks pull an XCom value?")

    assert record.status is RequestStatus.COMPLETE and record.partial_answer is None
    assert record.answer == " ".join([SENTENCE] * 24)
    texts = [text for _, text in store.partials]
    assert len(texts) >= 4  # it grew in steps the reader saw ...
    assert all(record.answer.startswith(text.rstrip()) for text in texts)  # ... each a beginning of the answer
    assert [len(t) for t in texts] == sorted(len(t) for t in texts) and texts[-1] != texts[0]
    streamed_s = store.partials[-1][0] - store.partials[0][0]
    assert store.writes["progress"] <= 1 + streamed_s / INTERVAL_S + 1
    assert store.writes["finish"] == 1 and store.writes["claim"] == 1


def test_a_stream_cut_off_mid_way_is_retried_whole_never_appended_to(streaming_worker, wire):
    wire.answer_sentences, wire.token_interval_s = 3, 0.01
    wire.stream_cuts = [14]  # the first answer stream drops after 14 words
    record, store, _ = streaming_worker("How do I stop catchup of old DAG runs?")

    assert record.status is RequestStatus.COMPLETE
    assert record.answer == " ".join([SENTENCE] * 3)  # the retry's text alone
    answer_calls = [c for c in wire.calls if c["body"].get("stream")]
    assert len(answer_calls) == 2


def test_a_model_failing_mid_stream_every_time_ends_failed_with_no_half_answer(streaming_worker, wire):
    wire.answer_sentences, wire.token_interval_s = 3, 0.01
    wire.stream_cuts = [5, 5, 5]  # every attempt drops
    record, store, _ = streaming_worker("Where do connections come from?")

    assert store.writes.get("progress", 0) >= 1  # half an answer was shown while it was written ...
    assert record.status is RequestStatus.FAILED  # ... and is gone: the request failed, with nothing of it left
    assert record.answer is None and record.partial_answer is None and record.sources == []
    assert "model" in record.error


@pytest.fixture(scope="module")
def streaming_api(local_stack, indexed, pg_url, openai_server):  # noqa: F811
    slack_api = SlackAPI()
    settings = _settings(pg_url, "stream", openai_base_url=openai_server.base_url, openai_api_key="k",
                         cheap_model="loopback-cheap", strong_model="loopback-strong", llm_timeout_s=10.0,
                         slack_bot_token="xoxb-test", slack_signing_secret=SECRET, slack_api_url=slack_api.base_url)
    api, _ = local_stack.start_functions(settings)
    slack = local_stack.start_slack(settings)
    yield api.url, slack.url, slack_api
    slack_api.stop()


def test_the_web_page_shows_the_answer_growing_before_it_is_complete(page, streaming_api, wire):  # noqa: F811
    api_url, _, _ = streaming_api
    wire.answer_sentences, wire.token_interval_s = 25, 0.03  # 225 words over about 7 s

    page.goto(api_url)
    page.get_by_label("Your question").fill("How do tasks pull an XCom value?")
    page.get_by_role("button", name="Ask", exact=True).click()
    writing = page.locator(".answer.writing .answer-text")
    writing.wait_for(timeout=30_000)
    seen = [writing.inner_text()]
    page.wait_for_timeout(2500)  # the answer so far is written at most once a second
    if page.locator(".answer.writing").count():  # still being written a second later: it grew meanwhile
        seen.append(writing.inner_text())
    assert page.locator(".answer.writing .rating").is_hidden()  # no rating of half an answer
    final = page.locator(".answer:not(.writing) .answer-text")
    final.wait_for(timeout=60_000)
    text = final.inner_text()
    assert text.endswith("it works [1][2].") and len(text) > len(seen[0])
    assert len(seen) == 2 and len(seen[1]) > len(seen[0])  # it grew while the page watched
    assert all(text.startswith(partial.rstrip(" ▍")) for partial in seen)
    assert page.locator(".answer").count() == 1  # the written answer replaced the one being written


def test_slack_gets_a_reply_at_once_that_is_edited_as_the_answer_is_written(streaming_api, wire):
    _, slack_url, slack_api = streaming_api
    wire.answer_sentences, wire.token_interval_s = 25, 0.03
    body = event("Ev-stream", "How do tasks pull an XCom value?")
    assert post(slack_url, body)[0] == 200
    mention_ts = json.loads(body)["event"]["ts"]

    reply, = wait_for(lambda: [m for m in slack_api.replies(mention_ts) if m.get("blocks")])
    placeholder = next(p for p in slack_api.posted if p["ts"] == reply["ts"])
    assert placeholder["text"] == "Looking through the docs…"
    edits = slack_api.edits(reply["ts"])
    partial, final = edits[:-1], edits[-1]
    assert len(partial) >= 3 and all(e["text"].endswith("✍️") for e in partial)  # the text as it was written
    assert [len(e["text"]) for e in partial] == sorted(len(e["text"]) for e in partial)
    assert "it works [1][2]." in final["text"] and "Sources" in json.dumps(final["blocks"])
    assert "askflow_rate_up" in json.dumps(final["blocks"])


def test_partial_writes_and_edits_never_race_the_final_write(streaming_api, wire):
    """The Slack reply and the request end on the final answer, not on a late partial one."""
    api_url, slack_url, slack_api = streaming_api
    from google.cloud import firestore

    wire.answer_sentences, wire.token_interval_s = 6, 0.0  # as fast as it goes
    body = event("Ev-stream-fast", "Where do connections come from?")
    assert post(slack_url, body)[0] == 200
    mention_ts = json.loads(body)["event"]["ts"]
    reply, = wait_for(lambda: [m for m in slack_api.replies(mention_ts) if m.get("blocks")])
    threading.Event().wait(1.5)  # anything late would land now
    assert slack_api.edits(reply["ts"])[-1].get("blocks")
    stored = firestore.Client(project="askflow-test").collection("requests").document("slack-Ev-stream-fast").get()
    assert stored.get("status") == "complete" and stored.get("partial_answer") is None
