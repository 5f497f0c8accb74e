"""The Slack bot over real HTTP: signed Events API and interactivity payloads to the function under
functions-framework; replies go to the loopback Slack Web API, answers come from the real answer worker."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from google.cloud import firestore
from slack_sdk.signature import SignatureVerifier

from askflow.domain.model import RequestStatus
from tests.support.loopback_apis import SlackAPI
from tests.test_ask_path import _settings, indexed  # noqa: F401 - the indexed docs fixture

SECRET = "test-signing-secret"


@pytest.fixture(scope="module")
def slack_api():
    api = SlackAPI()
    api.channels["C9"] = [{"ts": "1700000500.000100", "text": "We are upgrading our scheduler setup", "replies": [
        {"ts": "1700000501.000100", "text": "Catchup keeps creating old runs"}]}]
    yield api
    api.stop()


@pytest.fixture(scope="module")
def bot(local_stack, indexed, pg_url, slack_api) -> str:  # noqa: F811
    settings = _settings(pg_url, "slack", slack_bot_token="xoxb-test", slack_signing_secret=SECRET,
                         slack_api_url=slack_api.base_url, slack_reviewers=["U8"])
    local_stack.start_functions(settings)
    return local_stack.start_slack(settings).url


def post(url: str, body: bytes, *, content_type="application/json", timestamp: int | None = None,
         secret: str = SECRET, headers: dict | None = None):
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body.decode())
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": content_type, "X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature,
        **(headers or {})})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), time.monotonic() - started


def event(event_id: str, text: str, **fields) -> bytes:
    return json.dumps({
        "token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback", "event_id": event_id,
        "event_time": int(time.time()), "authorizations": [{"user_id": "UBOT", "is_bot": True}],
        "event": {"type": "app_mention", "user": "U5", "text": f"<@UBOT> {text}", "channel": "C9",
                  "ts": f"{int(time.time())}.000200", "event_ts": f"{int(time.time())}.000200", **fields},
    }).encode()


def wait_for(predicate, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail("timed out waiting")


def test_url_verification_is_answered(bot):
    status, body, _ = post(bot, json.dumps({"type": "url_verification", "challenge": "c-123", "token": "t"}).encode())
    assert status == 200 and "c-123" in body


@pytest.mark.parametrize("case", ["bad-signature", "stale-timestamp"])
def test_bad_signature_and_stale_timestamp_are_401(bot, case):
    kwargs = {"secret": "wrong"} if case == "bad-signature" else {"timestamp": int(time.time()) - 600}
    status, _, _ = post(bot, event("Ev-bad", "hello"), **kwargs)
    assert status == 401


def test_mention_is_acknowledged_fast_and_answered_in_the_thread_once(bot, slack_api):
    body = event("Ev-1", "How do tasks pull an XCom value?")
    status, _, seconds = post(bot, body)
    assert status == 200 and seconds < 3
    retry_status, _, _ = post(bot, body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert retry_status == 200
    mention_ts = json.loads(body)["event"]["ts"]
    reply, = wait_for(lambda: [m for m in slack_api.replies(mention_ts) if m.get("blocks")])
    placeholder = next(p for p in slack_api.posted if p["ts"] == reply["ts"])
    assert placeholder["text"] == "Looking through the docs…"  # posted at once, then edited into the answer
    blocks = reply["blocks"] if isinstance(reply["blocks"], list) else json.loads(reply["blocks"])
    # numbered sources; these docs were indexed from a folder, and a file: URI is no link in Slack, only its title
    assert re.search(r'\\n\[1\] XComs(\\n|")', json.dumps(blocks)) and "file:" not in json.dumps(blocks)
    stored = firestore.Client(project="askflow-test").collection("requests").document("slack-Ev-1").get().to_dict()
    assert re.search(r"^file:.*xcoms\.rst#", stored["sources"][0]["url"])  # the source itself links to the section
    actions = next(b for b in blocks if b["type"] == "actions")
    assert [e["value"] for e in actions["elements"]] == ["slack-Ev-1"] * 4
    assert [e["action_id"] for e in actions["elements"]] == [
        "askflow_rate_up", "askflow_rate_down", "askflow_approve", "askflow_ask_person"]  # reviewers are configured
    def reactions():
        return [(r["method"], r["name"]) for r in slack_api.reactions if r["timestamp"] == mention_ts]
    wait_for(lambda: ("reactions.add", "white_check_mark") in reactions(), timeout_s=10)  # marked done after the post
    assert ("reactions.add", "hourglass_flowing_sand") in reactions()
    time.sleep(2)
    assert len(slack_api.replies(mention_ts)) == 1  # the retry made no 2nd answer


def test_thread_history_makes_the_question_stand_alone(bot, slack_api):
    body = event("Ev-2", "how do I stop that?", thread_ts="1700000500.000100")
    assert post(bot, body)[0] == 200
    record = wait_for(lambda: (firestore.Client(project="askflow-test").collection("requests")
                               .document("slack-Ev-2").get().to_dict() or {}).get("sources") and
                      firestore.Client(project="askflow-test").collection("requests").document("slack-Ev-2").get()
                      .to_dict())
    assert record["context_turns"] == 2  # the thread's two earlier messages
    assert record["sources"][0]["doc_id"] == "docs:scheduling.md"  # "that" = catchup, from the thread


def test_button_click_becomes_a_rating(bot, slack_api):
    post(bot, event("Ev-3", "Where do connections come from?"))
    wait_for(lambda: (firestore.Client(project="askflow-test").collection("requests").document("slack-Ev-3").get()
                      .to_dict() or {}).get("status") == RequestStatus.COMPLETE)
    payload = {"type": "block_actions", "user": {"id": "U7", "username": "ana"}, "team": {"id": "T1"},
               "api_app_id": "A1", "token": "t", "trigger_id": "1.2", "container": {"type": "message"},
               "channel": {"id": "C9"}, "response_url": f"{slack_api.url}/response",
               "actions": [{"type": "button", "action_id": "askflow_rate_down", "block_id": "b",
                            "value": "slack-Ev-3", "action_ts": str(time.time())}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    status, _, _ = post(bot, body, content_type="application/x-www-form-urlencoded")
    assert status == 200
    stored = firestore.Client(project="askflow-test").collection("requests").document("slack-Ev-3").get().to_dict()
    assert stored["ratings"]["slack-U7"]["positive"] is False


def test_only_a_reviewers_approve_click_verifies_an_answer(bot, slack_api):
    requests = firestore.Client(project="askflow-test").collection("requests")
    post(bot, event("Ev-8", "Where do connections come from?"))
    wait_for(lambda: (requests.document("slack-Ev-8").get().to_dict() or {}).get("status") == RequestStatus.COMPLETE)
    reply = wait_for(lambda: next((m for m in slack_api.updated + slack_api.posted
                                   if "askflow_approve" in json.dumps(m.get("blocks") or [])
                                   and "slack-Ev-8" in json.dumps(m.get("blocks") or [])), None))
    assert reply  # reviewers are configured: the answer carries the approve button

    def click(user: str) -> int:
        payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T1"}, "api_app_id": "A1",
                   "token": "t", "trigger_id": "1.2", "container": {"type": "message"}, "channel": {"id": "C9"},
                   "response_url": f"{slack_api.url}/response",
                   "actions": [{"type": "button", "action_id": "askflow_approve", "block_id": "b",
                                "value": "slack-Ev-8", "action_ts": str(time.time())}]}
        return post(bot, urllib.parse.urlencode({"payload": json.dumps(payload)}).encode(),
                    content_type="application/x-www-form-urlencoded")[0]

    assert click("U7") == 200  # not a reviewer: acknowledged, and nothing happens
    assert "approval" not in requests.document("slack-Ev-8").get().to_dict()
    assert click("U8") == 200
    approval = requests.document("slack-Ev-8").get().to_dict()["approval"]
    assert approval["by"] == "slack:U8" and approval["via"] == "slack" and approval["approved"] is True


def test_an_answer_from_the_cache_offers_a_fresh_one_and_the_button_asks_again(bot, slack_api):
    from askflow.adapters.firestore_requests import FirestoreRequestStore
    from askflow.adapters.slack_replies import answer_blocks
    from askflow.domain.clock import utcnow
    from askflow.domain.model import Answer, Request, SlackThread, Source

    requests = FirestoreRequestStore(client=firestore.Client(project="askflow-test"), collection="requests")
    thread = SlackThread(channel="C9", ts=f"{int(time.time())}.000300", thread_ts=f"{int(time.time())}.000300")
    served = Request(request_id="slack-Ev-cached", question="How do pools limit concurrency?", created_at=utcnow(),
                     thread_id="slack-C9-thread", slack=thread).completed(Answer(
                         text="Pools cap running tasks [1].", sources=[Source(n=1, title="Pools", url="u")],
                         mode="cached", queries=[], usage=[], timings_ms={}, cached_from="earlier-1",
                         cache_similarity=0.93), at=utcnow())
    requests.create(served)
    blocks = answer_blocks(served)
    assert any("93% alike" in e["text"] and "earlier-1" in e["text"]
               for b in blocks if b["type"] == "context" for e in b["elements"])
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == ["askflow_rate_up", "askflow_rate_down", "askflow_fresh",
                                                 "askflow_ask_person"]

    payload = {"type": "block_actions", "user": {"id": "U7", "username": "ana"}, "team": {"id": "T1"},
               "api_app_id": "A1", "token": "t", "trigger_id": "1.3", "container": {"type": "message"},
               "channel": {"id": "C9"}, "response_url": f"{slack_api.url}/response",
               "actions": [{"type": "button", "action_id": "askflow_fresh", "block_id": "b",
                            "value": "slack-Ev-cached", "action_ts": str(time.time())}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    for _ in range(2):  # a double click asks once
        assert post(bot, body, content_type="application/x-www-form-urlencoded")[0] == 200
    fresh = wait_for(lambda: (lambda r: r if r and r.terminal else None)(requests.get("slack-Ev-cached-fresh")))
    assert fresh.fresh and fresh.question == served.question
    assert fresh.slack.model_copy(update={"reply_ts": None}) == thread.model_copy(update={"user": "U7"})  # who asked
    assert fresh.status is RequestStatus.COMPLETE and fresh.mode == "extractive"
    wait_for(lambda: [m for m in slack_api.replies(thread.thread_ts) if m.get("blocks")])
    assert len(slack_api.replies(thread.thread_ts)) == 1


def test_malformed_signed_inputs_are_acknowledged_or_a_400_never_a_500(bot):
    status, _, _ = post(bot, event("Ev-ts", "hi"), headers={"X-Slack-Request-Timestamp": "not-a-number"})
    assert status == 401  # before anything else reads the body
    malformed_events = [
        {"type": "event_callback", "event_id": "Ev-m1", "team_id": "T1"},  # no event at all
        {"type": "event_callback", "event_id": "Ev-m2", "event": {"type": "app_mention", "text": "<@UBOT> hi"}},
        {"type": "event_callback", "event_id": "Ev-m3", "event": {"type": "app_mention", "channel": "C9",
                                                                   "ts": "1.2", "text": ["not", "text"]}},
        {"type": "event_callback", "event_id": "Ev-m4", "event": {"type": "message", "channel_type": "im",
                                                                   "channel": "D1", "ts": "1.3", "text": "\u0000"}},
    ]
    for body in malformed_events:
        status, text, _ = post(bot, json.dumps(body).encode())
        assert status < 500, (body, status, text)
    for value in ("no-such-request", "__reserved__", None, 7):
        payload = {"type": "block_actions", "user": {"id": "U7"}, "team": {"id": "T1"}, "api_app_id": "A1",
                   "token": "t", "trigger_id": "1.4", "container": {"type": "message"}, "channel": {"id": "C9"},
                   "actions": [{"type": "button", "action_id": action, "block_id": "b", "value": value,
                                "action_ts": str(time.time())} for action in
                               ("askflow_rate_up", "askflow_fresh")]}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        status, text, _ = post(bot, body, content_type="application/x-www-form-urlencoded")
        assert status == 200, (value, status, text)
    status, _, _ = post(bot, b"[" * 100_000 + b"]" * 100_000)
    assert status in (400, 413)


def test_unknown_event_type_and_malformed_json(bot):
    unknown = json.dumps({"type": "event_callback", "event_id": "Ev-4", "team_id": "T1",
                          "event": {"type": "pin_added", "user": "U1"}}).encode()
    status, _, _ = post(bot, unknown)
    assert status == 404  # Bolt: no listener for this event; acknowledged as unhandled, nothing queued
    assert firestore.Client(project="askflow-test").collection("requests").document("slack-Ev-4").get().exists is False
    status, _, _ = post(bot, b'{"type": "event_callback", "event": ')
    assert status == 400
