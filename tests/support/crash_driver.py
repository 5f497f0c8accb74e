"""The parts of askflow a crash-consistency test kills, each run as its own process on the real adapters (the
Firestore emulator, the embedded Postgres) so that ``ASKFLOW_KILL_AT`` can SIGKILL it at a named point and the test
survives. Run as ``python -m tests.support.crash_driver PART JSON``; the same functions run in the test's process for
the restart.

- ``answer``: the answer worker on one request (a streaming answerer writing partial answers; Slack replies and
  budget counting recorded in Firestore, so the restart sees what the killed process did);
- ``grade``: a grading run over events (a grader that judges every answer good; the real write-back and learned
  records);
- ``ingest``: one indexing run of a folder (batches of one document, so a kill can fall between them).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from askflow.config import Settings
from askflow.domain.model import Answer, Grade, Source, Usage

PROJECT = "askflow-test"


class StreamingAnswerer:
    """Writes its answer in three steps, as a model streams, then answers."""

    def labels_of(self, doc_ids):  # who may read its sources now: as they were found (no relabelling meanwhile)
        return {}

    def answer(self, question, history=(), *, fresh=False, on_partial=None, viewer=None):
        source = Source(n=1, title="Pools", url="https://docs/pools", doc_id="docs:pools.rst",
                        excerpt="Pools limit concurrency.")
        words = ["Pools", "limit", "concurrency [1]."]
        for n in range(1, len(words) + 1):
            if on_partial is not None:
                on_partial(" ".join(words[:n]), [source])
            time.sleep(0.05)
        return Answer(text=" ".join(words), sources=[source], mode="llm", queries=[question],
                      usage=[Usage("loopback-strong", 100, 20)], timings_ms={"total_ms": 150.0})


class RecordedSlack:
    """The Slack side of the worker, recorded in Firestore (``{collection}_slack/{request id}``): how many replies
    were started, how many final answers posted, and into which messages."""

    def __init__(self, client, collection: str) -> None:
        self._client, self._collection = client, f"{collection}_slack"

    def _count(self, request, field: str) -> None:
        from google.cloud import firestore

        self._client.collection(self._collection).document(request.request_id).set(
            {field: firestore.Increment(1)}, merge=True)

    def thread_history(self, channel, thread_ts, *, before_ts):
        return []

    def start_reply(self, request):
        self._count(request, "started")
        return "9.9"

    def edit_reply(self, request, text):
        pass

    def post_answer(self, request):
        from google.cloud import firestore

        # a final answer posted into the reply started before is an edit of that message; without one, a new one
        message = request.slack.reply_ts or f"new-{firestore.SERVER_TIMESTAMP}"
        self._client.collection(self._collection).document(request.request_id).set(
            {"posted": firestore.Increment(1), "messages": firestore.ArrayUnion([message])}, merge=True)


class ApprovingGrader:
    method = "llm"

    def grade(self, requests):
        return {r.request_id: Grade(helpfulness=5, relevance=5, public=True, method="llm") for r in requests}, []


def answer(spec: dict) -> str:
    from google.cloud import firestore

    from askflow.adapters.firestore_budgets import FirestoreBudgets
    from askflow.adapters.firestore_requests import FirestoreRequestStore
    from askflow.domain.messages import QuestionQueued
    from askflow.service_layer import handlers

    client = firestore.Client(project=PROJECT)
    settings = Settings(request_lease_s=spec["lease_s"], partial_write_interval_s=0.0,
                        model_prices={"loopback-strong": [1.0, 1.0]})
    return handlers.answer_request(
        QuestionQueued(request_id=spec["request_id"]),
        requests=FirestoreRequestStore(client=client, collection=spec["collection"]),
        answerer=StreamingAnswerer(), settings=settings, slack=RecordedSlack(client, spec["collection"]),
        budgets=FirestoreBudgets(client=client, collection=f"{spec['collection']}_budgets",
                                 limits=settings.budget_limits))


def grade(spec: dict) -> dict:
    from google.cloud import firestore

    from askflow.adapters.firestore_requests import FirestoreRequestStore, FirestoreRuns
    from askflow.adapters.pgvector_learned import PgLearnedSignals
    from askflow.adapters.pgvector_store import PgVectorStore
    from askflow.domain.messages import GradingDue
    from askflow.ingest.chunking import ChunkingStrategy
    from askflow.service_layer.evaluation import grade_events
    from tests.fakes import HashEmbeddings

    client = firestore.Client(project=PROJECT)
    store = PgVectorStore(url=spec["pg_url"], collection=spec["table"])
    signals = PgLearnedSignals(url=spec["pg_url"], table=f"{spec['table']}_learned")
    try:
        run = grade_events([GradingDue(**event) for event in spec["events"]],
                           requests=FirestoreRequestStore(client=client, collection=spec["collection"]),
                           runs=FirestoreRuns(client=client, collection=f"{spec['collection']}_runs"), store=store,
                           embeddings=HashEmbeddings(), grader=ApprovingGrader(), strategy=ChunkingStrategy(),
                           answers_source="answers", answers_base_url="http://askflow.test/answers", batch_size=2,
                           signals=signals, collection=spec["table"])
    finally:
        store.close()
        signals.close()
    return run.model_dump(mode="json")


def ingest(spec: dict) -> dict:
    from askflow.adapters.pgvector_store import PgVectorStore
    from askflow.ingest.chunking import ChunkingStrategy
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.sources.files import load_paths
    from tests.fakes import HashEmbeddings

    store = PgVectorStore(url=spec["pg_url"], collection=spec["table"])
    try:
        return index_documents(load_paths([Path(spec["folder"])], source="docs"), store=store,
                               embeddings=HashEmbeddings(), strategy=ChunkingStrategy(), source="docs",
                               batch_chunks=1).to_dict()
    finally:
        store.close()


PARTS = {"answer": answer, "grade": grade, "ingest": ingest}

if __name__ == "__main__":
    part, spec = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(PARTS[part](spec)))
