"""The feedback loop end to end on the emulators, as the demo runs it (no model judge): answer → the asker's 👍 →
Firestore trigger → Pub/Sub → ``dag.test()`` of the evaluation DAG → in the review queue, not verified (not listed,
not served, not a source) → a reviewer's approval → graded again → verified: listed, served from the cache to a
rewording, retrievable as a source; private answers never stored or listed, whoever approves them."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from google.cloud import firestore, pubsub_v1

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.dev.local_stack import ensure_pull_subscription, settings_env
from askflow.domain.clock import utcnow
from askflow.domain.messages import GradingDue
from askflow.domain.model import RequestStatus
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths
from askflow.service_layer import handlers
from askflow.service_layer.evaluation import grade_events
from tests.support.dag_runner import run_dag
from tests.test_ask_path import ask, call, rate, wait_terminal

DOCS = Path(__file__).parent / "data" / "docs"
PROJECT = "askflow-test"

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def loop(local_stack, pg_url, minilm, airflow_env, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("loop-docs")
    for file in DOCS.rglob("*"):
        if file.is_file():
            target = corpus / file.relative_to(DOCS)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
    settings = Settings(
        database_url=pg_url, collection="loop_docs", requests_collection="loop_requests",
        evaluation_runs_collection="loop_runs", questions_topic="loop-questions",
        questions_subscription="loop-questions-worker", evaluation_topic="loop-evaluation",
        evaluation_subscription="loop-evaluation-airflow", evaluation_batch_size=2,
    )
    store = PgVectorStore(url=pg_url, collection=settings.collection)
    index_documents(load_paths([corpus], source="docs"), store=store, embeddings=minilm,
                    strategy=ChunkingStrategy(), source="docs")
    ensure_pull_subscription(settings, topic=settings.evaluation_topic, subscription=settings.evaluation_subscription)
    api, _ = local_stack.start_functions(settings)
    local_stack.start_trigger(settings)
    env = {**airflow_env, **local_stack.env, **settings_env(settings)}
    yield {"settings": settings, "api": api.url, "env": env, "store": store, "corpus": corpus}
    store.close()


def _request(settings: Settings, request_id: str) -> dict:
    return firestore.Client(project=PROJECT).collection(settings.requests_collection).document(request_id).get() \
        .to_dict()


def _wait_for_queue(settings: Settings, expected: int, timeout_s: float = 30) -> None:
    """The trigger publishes asynchronously: wait until the subscription holds ``expected`` undelivered events."""
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(PROJECT, settings.evaluation_subscription)
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline and len(seen) < expected:
        response = subscriber.pull(request={"subscription": path, "max_messages": 50}, timeout=5)
        for received in response.received_messages:
            seen.add(json.loads(received.message.data)["request_id"])
        if response.received_messages:  # let them be redelivered to the DAG at once
            subscriber.modify_ack_deadline(request={"subscription": path, "ack_ids": [
                r.ack_id for r in response.received_messages], "ack_deadline_seconds": 0})
        time.sleep(0.5)
    subscriber.close()
    assert len(seen) >= expected, f"only {len(seen)} of {expected} evaluation events were queued"


def test_good_answers_become_sources_private_ones_never_do(loop):
    settings, api = loop["settings"], loop["api"]
    good_id = ask(api, "How do tasks pull an XCom value?")
    private_id = ask(api, "My password=hunter2secret fails; how do I define a connection in an environment variable?")
    for request_id in (good_id, private_id):
        assert wait_terminal(api, request_id)["status"] == RequestStatus.COMPLETE
    unrated_id = ask(api, "How do I pass data between tasks with XComs?")
    assert wait_terminal(api, unrated_id)["status"] == RequestStatus.COMPLETE
    status, _ = rate(api, good_id, {"positive": True})
    assert status == 200
    _wait_for_queue(settings, expected=3)

    assert run_dag("askflow_evaluate.py", {}, loop["env"]) == "success"
    again = "How can a task pull XCom values pushed by another task?"

    # graded good by the heuristic and rated up by its asker: in the review queue, verified by nothing
    liked = _request(settings, good_id)
    assert liked["is_good"] is True and liked["grade"]["method"] == "heuristic"
    assert liked["in_review"] is True and liked["verified"] is False
    assert _request(settings, unrated_id)["verified"] is False and _request(settings, unrated_id)["in_review"] is False
    assert loop["store"].document_fingerprints(f"{settings.answers_source}:") == {}
    status, feed = call("GET", f"{api}requests?good=true")
    assert feed["items"] == []  # nothing unverified reaches the feed ...
    assert wait_terminal(api, ask(api, again))["mode"] == "extractive"  # ... or the cache

    handlers.review_answer(good_id, approved=True, reviewer="rita@example.com", via="admin",
                           requests=bootstrap(settings).requests)
    private_approved = handlers.review_answer(private_id, approved=True, reviewer="rita@example.com", via="admin",
                                              requests=bootstrap(settings).requests)
    assert private_approved.approval is not None
    _wait_for_queue(settings, expected=3)  # the two approvals, and the rewording answered meanwhile
    assert run_dag("askflow_evaluate.py", {}, loop["env"]) == "success"

    good = _request(settings, good_id)
    assert good["verified"] is True and good["verified_by"] == "reviewer rita" and good["in_review"] is False
    assert good["graded_at"] and good["graded_revision"]
    private = _request(settings, private_id)
    assert private["is_good"] is False and private["grade_reason"].startswith("private: password")
    assert private["verified"] is False  # a reviewer's approval never publishes private data

    stored = loop["store"].document_fingerprints(f"{settings.answers_source}:")
    assert set(stored) == {f"answers:{good_id}"}

    status, feed = call("GET", f"{api}requests?good=true")
    listed = [item["request_id"] for item in feed["items"]]
    assert listed == [good_id]

    cached = wait_terminal(api, ask(api, again))  # the verified answer, served again
    assert cached["mode"] == "cached" and cached["cached_from"] == good_id and cached["models"] == []
    related = wait_terminal(api, ask(api, again, fresh=True))  # answered anew: the stored answer is a source
    assert related["mode"] == "extractive"
    assert f"answers:{good_id}" in [s["doc_id"] for s in related["sources"]]
    assert any(s["kind"] == "answered_question" for s in related["sources"])

    # every event delivered again: graded once, stored once
    graded_at = good["graded_at"]
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(PROJECT, settings.evaluation_topic)
    for request_id in (good_id, private_id):
        event = {"request_id": request_id, "revision": _request(settings, request_id)["graded_revision"]}
        publisher.publish(topic, json.dumps(event).encode()).result(timeout=10)
    assert run_dag("askflow_evaluate.py", {}, loop["env"]) == "success"
    assert _request(settings, good_id)["graded_at"] == graded_at
    assert _request(settings, private_id)["graded_at"] == private["graded_at"]
    runs = sorted((r.to_dict() for r in firestore.Client(project=PROJECT)
                   .collection(settings.evaluation_runs_collection).stream()), key=lambda r: r["started_at"])
    assert runs[-1]["skipped"] == 2  # the two redelivered events
    assert runs[-1]["graded"] == 2  # only the two asks completed since the last run (cached, then fresh)

    # editing a cited source and re-ingesting invalidates the stored answers that cite it
    answers = settings.answers_source + ":"
    before = loop["store"].document_metadata(answers)
    citing = {doc_id for doc_id, meta in before.items() if "docs:xcoms.rst" in meta["cited"]}
    assert f"answers:{good_id}" in citing
    xcoms = loop["corpus"] / "xcoms.rst"
    xcoms.write_text(xcoms.read_text() + "\nXCom values are now stored in object storage by default.\n")
    result = index_documents(load_paths([loop["corpus"]], source="docs"), store=loop["store"],
                             embeddings=bootstrap(settings).embeddings, strategy=ChunkingStrategy(), source="docs",
                             answers_source=settings.answers_source)
    assert result.answers_invalidated == len(citing)
    assert set(loop["store"].document_fingerprints(answers)) == set(before) - citing


def test_n_events_in_batches_of_b_make_ceil_n_over_b_grading_calls(local_stack, pg_url, wire, collection_name):
    settings = Settings(
        database_url=pg_url, collection=collection_name, requests_collection="batch_requests",
        evaluation_runs_collection="batch_runs", openai_base_url=wire.base_url, openai_api_key="test-key",
        cheap_model="loopback-cheap", embedding_provider="openai", embedding_model="text-embedding-3-small",
    )
    client = firestore.Client(project=PROJECT)
    ids = []
    for n in range(5):
        request_id = f"batch-{collection_name}-{n}"
        client.collection(settings.requests_collection).document(request_id).set({
            "request_id": request_id, "question": f"How do I configure pools number {n}?",
            "status": RequestStatus.COMPLETE.value,
            "answer": "Use a pool [1].", "sources": [], "created_at": firestore.SERVER_TIMESTAMP,
            # the first one graded is rejected (its asker said no) while the collection does not exist yet; a
            # reviewer approved the others (the model judge alone verifies nothing)
            "asker_sha": "0" * 64, "ratings": {"asker": {"positive": n != 0, "at": utcnow()}},
            **({"approval": {"by": "rita", "at": utcnow(), "via": "admin", "approved": True}} if n else {}),
        })
        ids.append(request_id)
    events = [GradingDue(request_id=i, revision="seen") for i in ids] * 2  # every event twice
    with bootstrap(settings) as c:
        def grade():
            return grade_events(events, requests=c.requests, runs=c.evaluation_runs, store=c.store,
                                embeddings=c.embeddings, grader=c.grader, strategy=c.strategy(),
                                answers_source=settings.answers_source, answers_base_url=settings.answers_base_url,
                                batch_size=2)

        run = grade()
        grading_calls = [call for call in wire.calls if call["path"].endswith("/chat/completions")
                         and '"grades"' in call["body"]["messages"][0]["content"]]
        assert len(grading_calls) == run.llm_calls == math.ceil(5 / 2)
        assert run.graded == 5 and run.good == 4 and run.verified == 4 and run.method == "llm"
        assert run.tokens > 0
        # the four good answers went into the store in one indexing call: one embeddings request
        embedding_calls = [call for call in wire.calls if call["path"].endswith("/embeddings")]
        assert len(embedding_calls) == 1 and len(embedding_calls[0]["body"]["input"]) == 4
        assert set(c.store.document_fingerprints("answers:")) == {f"answers:{i}" for i in ids[1:]}
        again = grade()
        assert again.graded == 0 and again.skipped == 5 and again.llm_calls == 0
