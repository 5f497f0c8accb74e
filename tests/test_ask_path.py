"""The ask path end to end: real HTTP on functions-framework, the Firestore and Pub/Sub emulators, a real push
subscription to the answer worker, pgvector, and (in LLM mode) the loopback OpenAI-wire server."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from askflow.config import Settings
from askflow.domain.model import RequestStatus
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths

DOCS = Path(__file__).parent / "data" / "docs"
COLLECTION = "ask_path_docs"


ASKER_TOKENS: dict[str, str] = {}  # request id -> the token its ask answered with


def call(method: str, url: str, body: bytes | None = None, content_type: str = "application/json",
         headers: dict[str, str] | None = None):
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def ask(api_url: str, question: str, *, token: str | None = None, **fields) -> str:
    status, body = call("POST", f"{api_url}requests", json.dumps({"question": question, **fields}).encode(),
                        headers={"X-Asker-Token": token} if token else None)
    assert status == 202, body
    assert body["status"] == RequestStatus.PENDING
    ASKER_TOKENS[body["request_id"]] = body["asker_token"]
    return body["request_id"]


def rate(api_url: str, request_id: str, body: dict | bytes, *, token: str | None = None):
    """Rate as the asker (their token, unless another is given)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call("POST", f"{api_url}requests/{request_id}/feedback", data,
                headers={"X-Asker-Token": token if token is not None else ASKER_TOKENS.get(request_id, "")})


def wait_terminal(api_url: str, request_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, record = call("GET", f"{api_url}requests/{request_id}")
        assert status == 200, record
        if RequestStatus(record["status"]).terminal:
            return record
        time.sleep(0.2)
    pytest.fail(f"request {request_id} still {record['status']} after {timeout_s}s")


@pytest.fixture(scope="module")
def indexed(pg_url, minilm):
    from askflow.adapters.pgvector_store import PgVectorStore

    store = PgVectorStore(url=pg_url, collection=COLLECTION)
    index_documents(
        load_paths([DOCS], source="docs"), store=store, embeddings=minilm, strategy=ChunkingStrategy(),
        source="docs",
    )
    store.close()


def _settings(pg_url: str, name: str, **overrides) -> Settings:
    return Settings(**{
        "database_url": pg_url, "collection": COLLECTION, "questions_topic": f"questions-{name}",
        "questions_subscription": f"questions-{name}-worker", "request_lease_s": 60,
        "learned_collection": f"learned_{name}", **overrides,
    })


@pytest.fixture(scope="module")
def extractive_api(local_stack, indexed, pg_url) -> str:
    api, _ = local_stack.start_functions(_settings(pg_url, "extractive"))
    return api.url


@pytest.fixture(scope="module")
def llm_api(local_stack, indexed, pg_url, openai_server) -> str:
    settings = _settings(
        pg_url, "llm", openai_base_url=openai_server.base_url, openai_api_key="test-key",
        cheap_model="loopback-cheap", strong_model="loopback-strong", llm_max_attempts=4,
        llm_backoff_max_s=0.2, llm_timeout_s=2.0,
    )
    api, _ = local_stack.start_functions(settings)
    return api.url


def test_question_gets_an_extractive_answer_with_cited_sources(extractive_api):
    record = wait_terminal(extractive_api, ask(extractive_api, "How do tasks pull an XCom value?"))
    assert record["status"] == RequestStatus.COMPLETE, record
    assert record["mode"] == "extractive"
    assert record["answer"].startswith("> ")  # quoted passages; the mode says they are
    assert "[1]" in record["answer"]
    assert record["sources"][0]["doc_id"] == "docs:xcoms.rst"
    assert record["sources"][0]["url"].partition("#")[0].endswith("xcoms.rst")
    assert [s["n"] for s in record["sources"]] == list(range(1, len(record["sources"]) + 1))
    assert record["models"] == [] and record["tokens"] == {"prompt": 0, "completion": 0}
    assert record["timings_ms"]["total_ms"] > 0


def test_llm_answer_rewords_and_cites(llm_api, wire):
    record = wait_terminal(llm_api, ask(llm_api, "How do I stop catchup of old DAG runs?"))
    assert record["status"] == RequestStatus.COMPLETE, record
    assert record["mode"] == "llm"
    assert record["answer"].endswith("[1][2].")
    assert record["sources"][0]["doc_id"] == "docs:scheduling.md"
    assert len(record["queries"]) == 4  # the question and three rewordings
    assert record["models"] == ["loopback-cheap", "loopback-strong"]
    assert record["tokens"]["prompt"] > 0 and record["tokens"]["completion"] > 0
    chats = [c for c in wire.calls if c["path"].endswith("/chat/completions")]
    assert [c["body"]["model"] for c in chats] == ["loopback-cheap", "loopback-strong"]
    # the request's clock: the queue's publish time and the worker's receipt sit between creation and completion
    moments = [dt.datetime.fromisoformat(record[key]) for key in
               ("created_at", "published_at", "received_at", "claimed_at", "completed_at")]
    assert moments == sorted(moments)


def test_transient_model_failures_are_retried_then_complete(llm_api, wire):
    wire.failures.extend([429, 503, "timeout"])
    record = wait_terminal(llm_api, ask(llm_api, "Where do I define a connection as an environment variable?"))
    assert record["status"] == RequestStatus.COMPLETE, record
    assert record["sources"][0]["doc_id"] == "docs:guides/connections.html"
    assert len([c for c in wire.calls if c["path"].endswith("/chat/completions")]) == 5  # 3 failed + 2 good


def test_persistent_model_failure_fails_the_request_with_a_reason(llm_api, wire):
    wire.failures.extend([500] * 20)
    record = wait_terminal(llm_api, ask(llm_api, "What is an XCom backend?"))
    assert record["status"] == RequestStatus.FAILED
    assert "model endpoint failed 4 times" in record["error"]


def test_a_failed_rewording_still_answers_from_the_question_alone(llm_api, wire):
    wire.failures.extend([500] * 4)  # every attempt of the rewording call
    record = wait_terminal(llm_api, ask(llm_api, "How do I stop catchup of old DAG runs?"))
    assert record["status"] == RequestStatus.COMPLETE, record
    assert record["queries"] == ["How do I stop catchup of old DAG runs?"]
    assert record["models"] == ["loopback-strong"] and record["sources"][0]["doc_id"] == "docs:scheduling.md"


def test_duplicate_delivery_answers_once(llm_api, wire, local_stack):
    from google.cloud import pubsub_v1

    request_id = ask(llm_api, "How are XComs identified?")
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path("askflow-test", "questions-llm")
    publisher.publish(topic, json.dumps({"request_id": request_id}).encode()).result(timeout=10)
    first = wait_terminal(llm_api, request_id)
    assert first["status"] == RequestStatus.COMPLETE
    # a late redelivery after completion
    publisher.publish(topic, json.dumps({"request_id": request_id}).encode()).result(timeout=10)
    time.sleep(3)
    _, again = call("GET", f"{llm_api}requests/{request_id}")
    assert again["completed_at"] == first["completed_at"]
    assert again["answer"] == first["answer"]
    from google.cloud import firestore

    stored = firestore.Client(project="askflow-test").collection("requests").document(request_id).get().to_dict()
    assert stored["attempts"] == 1  # kept on the server: the public view does not show it
    assert len([c for c in wire.calls if c["path"].endswith("/chat/completions")]) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"question": ""}', "application/json", "question"),
        (b'{"question": "   "}', "application/json", "question"),
        (json.dumps({"question": "x" * 4001}).encode(), "application/json", "at most 4000"),
        (b'{"question": "hi",', "application/json", "not valid JSON"),
        (b"question=hi", "application/x-www-form-urlencoded", "Content-Type"),
        (b'{"question": "hi", "colour": "blue"}', "application/json", "colour"),
        (b'["hi"]', "application/json", "JSON object"),
        (b'{"question": 42}', "application/json", "question"),
        (b'{"question": "hi", "thread_id": "../etc"}', "application/json", "thread_id"),
    ],
    ids=["empty", "blank", "oversized", "broken-json", "form", "unknown-field", "array", "number", "bad-thread"],
)
def test_bad_input_is_a_400_naming_the_problem(extractive_api, body, content_type, expected):
    status, payload = call("POST", f"{extractive_api}requests", body, content_type)
    assert status == 400
    assert expected in payload["error"]
    assert "Traceback" not in payload["error"]


def test_unknown_request_is_a_404_and_wrong_method_a_405(extractive_api):
    status, payload = call("GET", f"{extractive_api}requests/doesnotexist")
    assert status == 404 and "doesnotexist" in payload["error"]
    status, payload = call("GET", f"{extractive_api}requests")
    assert status == 400 and "good=true" in payload["error"]
    status, payload = call("DELETE", f"{extractive_api}requests/abc")
    assert status == 405 and "error" in payload
    status, payload = call("GET", f"{extractive_api}nowhere")
    assert status == 404


def test_feedback_is_one_rating_by_the_asker_stored_on_the_request(extractive_api):
    from google.cloud import firestore

    from askflow.adapters.firestore_requests import FirestoreRequestStore
    from askflow.domain.clock import utcnow
    from askflow.domain.model import Request, token_sha

    # stored but never queued: it stays pending, and rating waits for the answer
    store = FirestoreRequestStore(client=firestore.Client(project="askflow-test"), collection="requests")
    token = "pending-asker-token-0123456789"
    unanswered = Request(request_id=f"unanswered-{time.time_ns()}", question="How do pools work?", created_at=utcnow(),
                         asker_sha=token_sha(token))
    store.create(unanswered)
    status, payload = rate(extractive_api, unanswered.request_id, {"positive": True}, token=token)
    assert status == 409 and "only answered requests" in payload["error"]
    assert store.get(unanswered.request_id).ratings == {}

    request_id = ask(extractive_api, "How do tasks push an XCom?")
    assert wait_terminal(extractive_api, request_id)["status"] == RequestStatus.COMPLETE
    for forged in ("", "someone-else-entirely-0123456789"):  # no token, another asker's: refused, nothing stored
        status, payload = rate(extractive_api, request_id, {"positive": False}, token=forged)
        assert status == 403 and "only whoever asked" in payload["error"]
    assert rate(extractive_api, request_id, {"positive": True})[0] == 200
    assert rate(extractive_api, request_id, {"positive": False, "comment": "missing the example"})[0] == 200
    stored = store.get(request_id)
    assert set(stored.ratings) == {"asker"} and stored.ratings["asker"].positive is False
    assert stored.ratings["asker"].comment == "missing the example"

    assert rate(extractive_api, "nope", {"positive": True})[0] == 404
    bad_bodies = (b'{"positive": "yes"}', b'{}', b'{"positive": true, "stars": 5}',
                  b'{"positive": true, "rater": "bo"}', b'{"positive": true, "comment": "nul \\u0000 byte"}')
    for bad in bad_bodies:
        status, payload = rate(extractive_api, request_id, bad)
        assert status == 400, bad


def test_a_request_shows_only_its_public_view(extractive_api):
    request_id = ask(extractive_api, "Where are connections stored?")
    wait_terminal(extractive_api, request_id)
    assert rate(extractive_api, request_id, {"positive": True, "comment": "my email is ana@example.com"})[0] == 200
    status, record = call("GET", f"{extractive_api}requests/{request_id}")
    assert status == 200 and record["answer"] and record["sources"] and record["completed_at"]
    for private in ("ratings", "rated_at", "grade", "is_good", "grade_reason", "slack", "attempts", "asker_sha",
                    "asker_token"):
        assert private not in record
    assert "ana@example.com" not in json.dumps(record)


def test_a_thread_is_continued_only_with_its_askers_token(extractive_api):
    first = ask(extractive_api, "How do tasks pull an XCom value?")
    wait_terminal(extractive_api, first)
    status, payload = call("POST", f"{extractive_api}requests", json.dumps(
        {"question": "What did they ask?", "thread_id": first}).encode())
    assert status == 404 and "no thread" in payload["error"]
    status, payload = call("POST", f"{extractive_api}requests", json.dumps(
        {"question": "What did they ask?", "thread_id": first}).encode(),
        headers={"X-Asker-Token": "an-attackers-own-token-0123456789"})
    assert status == 404
    follow_up = ask(extractive_api, "And how does a task push one?", thread_id=first, token=ASKER_TOKENS[first])
    record = wait_terminal(extractive_api, follow_up)
    assert record["thread_id"] == first and record["context_turns"] == 1
    assert ASKER_TOKENS[follow_up] == ASKER_TOKENS[first]


@pytest.mark.parametrize("body", [
    {"question": "nul \u0000 inside"},
    {"question": "lone \ud800 surrogate"},
    {"question": "q?", "thread_id": "__reserved__"},
    {"question": "q?", "thread_id": "a/b"},
])
def test_text_and_ids_the_stores_cannot_hold_are_a_400(extractive_api, body):
    status, payload = call("POST", f"{extractive_api}requests", json.dumps(body).encode())
    assert status == 400 and payload["error"]


def test_slow_clients_get_a_408_and_do_not_starve_the_others(extractive_api):
    import socket
    import urllib.parse

    url = urllib.parse.urlsplit(extractive_api)
    slow = []
    for _ in range(8):  # each promises a body and sends one byte of it
        sock = socket.create_connection((url.hostname, url.port), timeout=60)
        sock.sendall(b"POST /requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        slow.append(sock)
    started = time.monotonic()
    request_id = ask(extractive_api, "How do tasks pull an XCom value?")
    assert time.monotonic() - started < 5  # the others are served meanwhile
    assert wait_terminal(extractive_api, request_id)["status"] == RequestStatus.COMPLETE
    for sock in slow:
        reply = b""
        while b"did not arrive" not in reply and (chunk := sock.recv(4096)):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive" in reply
        sock.close()


def test_reserved_ids_deep_nesting_and_huge_chunked_bodies_are_4xx(extractive_api):
    import http.client
    import urllib.parse

    assert call("GET", f"{extractive_api}requests/__reserved__")[0] == 404
    assert call("POST", f"{extractive_api}requests/__x__/feedback", b'{"positive": true}')[0] == 404
    deep = b"[" * 100_000 + b"]" * 100_000
    status, payload = call("POST", f"{extractive_api}requests", deep)
    assert status in (400, 413) and payload["error"]

    url = urllib.parse.urlsplit(extractive_api)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.putrequest("POST", "/requests")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    piece = b"x" * 65536
    try:
        for _ in range(1600):  # 100 MB, unless the server stops reading first
            connection.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed after its cap: what a client sees of a 413
    response = connection.getresponse()
    assert response.status == 413 and "larger than" in json.loads(response.read())["error"]
    connection.close()


def test_homepage_feed_lists_only_verified_answers_newest_first(extractive_api):
    from google.cloud import firestore

    client = firestore.Client(project="askflow-test")
    ids = [ask(extractive_api, q) for q in ("How is catchup disabled?", "What is an XCom?", "Where are connections?")]
    for request_id in ids:
        wait_terminal(extractive_api, request_id)
    # the evaluation loop's verdicts, written as it writes them
    client.collection("requests").document(ids[0]).update({"is_good": True, "verified": True})
    client.collection("requests").document(ids[1]).update({"is_good": True, "verified": False})  # graded good only
    client.collection("requests").document(ids[2]).update({"is_good": True, "verified": True})
    status, feed = call("GET", f"{extractive_api}requests?good=true")
    assert status == 200
    listed = [item["request_id"] for item in feed["items"]]
    assert listed.index(ids[2]) < listed.index(ids[0]) and ids[1] not in listed
    assert set(feed["items"][0]) == {"request_id", "question", "answer", "sources", "created_at", "mode"}
