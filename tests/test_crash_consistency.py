"""Crash consistency: the answer worker, a grading run and an ingestion run are killed (SIGKILL, in a subprocess) at
each named kill point (``askflow.faults``), restarted the way production restarts them, and the end state is
checked. The worker's restart is Pub/Sub's redelivery of the unacknowledged message (waiting out the dead worker's
lease, 1 s here); a grading or ingestion run's restart is Airflow's retry of the task (the same call again)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from google.cloud import firestore

from askflow.adapters.firestore_requests import FirestoreRequestStore
from askflow.domain.budgets import counter_id
from askflow.domain.clock import utcnow
from askflow.domain.errors import LeaseHeld
from askflow.domain.messages import GradingDue
from askflow.domain.model import Approval, Chunk, Request, RequestStatus, SlackThread, Source
from askflow.faults import KILL_AT
from tests.fakes import HashEmbeddings
from tests.support import crash_driver

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 1.0
EXPECTED_ANSWER = "Pools limit concurrency [1]."
COST_USD = 120 / 1_000_000  # the driver's answer: 100 + 20 tokens at $1 per million


def _killed(part: str, spec: dict, point: str) -> None:
    """Run ``part`` in a subprocess that dies at ``point``; fails unless it was killed there."""
    process = subprocess.run([sys.executable, "-m", "tests.support.crash_driver", part, json.dumps(spec)],
                             cwd=ROOT, env={**os.environ, KILL_AT: point}, capture_output=True, text=True,
                             timeout=120)
    assert process.returncode == -signal.SIGKILL, (point, process.returncode, process.stderr[-3000:])
    assert f"killed at {point}" in process.stderr


def _redelivered(spec: dict, *, timeout_s: float = 15) -> str:
    """Pub/Sub's redelivery: a message the worker did not acknowledge comes back; while the dead worker's lease is
    live it is refused (``LeaseHeld``: not acknowledged) and comes back again."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return crash_driver.answer(spec)
        except LeaseHeld:
            assert time.monotonic() < deadline, "the dead worker's lease never ran out"
            time.sleep(0.2)


WORKER_POINTS = ["worker.after_claim", "worker.after_partial", "worker.after_answer", "worker.after_finish",
                 "worker.after_post"]


@pytest.mark.parametrize("point", WORKER_POINTS)
def test_a_worker_killed_anywhere_ends_with_one_answer_one_reply_and_its_cost_counted_once(local_stack, point):
    collection = f"crash_{uuid.uuid4().hex[:8]}"
    client = firestore.Client(project="askflow-test")
    request_id = uuid.uuid4().hex
    now = utcnow()
    FirestoreRequestStore(client=client, collection=collection).create(Request(
        request_id=request_id, question="How do pools limit concurrency?", created_at=now, updated_at=now,
        slack=SlackThread(channel="C1", ts="1.1", thread_ts="1.1", user="U1"), budget_identities=["slack:U1"]))
    spec = {"request_id": request_id, "collection": collection, "lease_s": LEASE_S}

    _killed("answer", spec, point)
    outcome = _redelivered(spec)
    assert outcome == ("delivered" if point in ("worker.after_finish", "worker.after_post") else "complete")
    assert _redelivered(spec) == "skipped"  # and a further redelivery changes nothing

    stored = FirestoreRequestStore(client=client, collection=collection).get(request_id)
    assert stored.status is RequestStatus.COMPLETE and stored.answer == EXPECTED_ANSWER
    assert stored.partial_answer is None and stored.delivered_at is not None
    assert stored.attempts == (1 if point in ("worker.after_finish", "worker.after_post") else 2)
    slack = client.collection(f"{collection}_slack").document(request_id).get().to_dict()
    assert slack["started"] == 1 and slack["messages"] == ["9.9"]  # one reply, edited into the one final answer
    assert slack["posted"] == (2 if point == "worker.after_post" else 1)  # the same edit again, after a death
    start = crash_driver.Settings().budget_limits.window(stored.created_at)[0]
    spent = client.collection(f"{collection}_budgets").document(counter_id("slack:U1", start)).get().to_dict()
    assert spent["usd"] == pytest.approx(COST_USD)  # counted once


GRADING_POINTS = ["grading.after_judge", "grading.after_write_back", "grading.after_apply", "grading.after_save"]


@pytest.mark.parametrize("point", GRADING_POINTS)
def test_a_grading_run_killed_anywhere_indexes_and_learns_every_good_answer_once(local_stack, pg_url, point):
    from askflow.adapters.pgvector_store import PgVectorStore

    collection, table = f"crash_{uuid.uuid4().hex[:8]}", f"crash_{uuid.uuid4().hex[:8]}"
    client = firestore.Client(project="askflow-test")
    requests = FirestoreRequestStore(client=client, collection=collection)
    store = PgVectorStore(url=pg_url, collection=table)
    embeddings = HashEmbeddings()
    store.ensure_collection(embeddings.dimension)
    page = Chunk(doc_id="docs:pools.rst", index=0, content="Pools limit how many tasks run at once.", title="Pools",
                 section="", url="https://docs/pools", sha="page-v1")
    store.upsert([page], embeddings.embed_documents([page.embedding_text]))
    source = Source(n=1, title="Pools", url="https://docs/pools", doc_id="docs:pools.rst", excerpt="Pools limit.")
    ids = [uuid.uuid4().hex for _ in range(3)]
    for n, request_id in enumerate(ids):
        now = utcnow()
        requests.create(Request(request_id=request_id, question=f"How do pools limit concurrency, case {n}?",
                                status=RequestStatus.COMPLETE, answer=EXPECTED_ANSWER, sources=[source],
                                created_at=now, updated_at=now, completed_at=now,
                                approval=Approval(by="rita", at=now, via="admin")))  # verified by a reviewer
    events = [GradingDue(request_id=r, revision=requests.get(r).revision()).model_dump() for r in ids]
    spec = {"events": events, "collection": collection, "table": table, "pg_url": pg_url}

    _killed("grade", spec, point)
    crash_driver.grade(spec)  # Airflow's retry of the task
    again = crash_driver.grade(spec)  # and the events redelivered once more
    assert again["skipped"] == len(ids) and again["graded"] == 0

    for request_id in ids:
        stored = requests.get(request_id)
        assert stored.graded_revision == stored.revision() and stored.is_good is True and stored.verified
    stored_answers = store.document_fingerprints("answers:")
    assert set(stored_answers) == {f"answers:{r}" for r in ids}  # every good answer indexed ...
    for request_id in ids:
        chunks = store.document_chunks(f"answers:{request_id}", audiences=None)
        assert len({c.chunk_id for c in chunks}) == len(chunks) == len({c.index for c in chunks})  # ... once
    with psycopg.connect(pg_url) as conn:
        learned = dict(conn.execute(f'SELECT request_id, count(*) FROM "{table}_learned" GROUP BY request_id'))
    assert learned == {r: 1 for r in ids}  # one learned record per request
    store.close()


INGEST_POINTS = ["ingest.after_batch", "ingest.before_prune"]


@pytest.mark.parametrize("point", INGEST_POINTS)
def test_an_ingestion_killed_anywhere_leaves_every_live_document_whole_and_no_deleted_one(pg_url, tmp_path,
                                                                                        point):
    from askflow.adapters.pgvector_store import PgVectorStore

    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.md").write_text(f"# Page {name}\n\nThe first version of page {name}, about pools.\n")
    table = f"crash_{uuid.uuid4().hex[:8]}"
    spec = {"folder": str(folder), "table": table, "pg_url": pg_url}
    crash_driver.ingest(spec)
    (folder / "a.md").write_text("# Page a\n\nThe second version of page a, about sensors.\n")
    (folder / "c.md").unlink()
    (folder / "d.md").write_text("# Page d\n\nA new page d, about deferrable operators.\n")

    _killed("ingest", spec, point)
    crash_driver.ingest(spec)  # the retry

    reference = {"folder": str(folder), "table": f"ref_{uuid.uuid4().hex[:8]}", "pg_url": pg_url}
    crash_driver.ingest(reference)  # the same folder, indexed with no kill
    crashed = PgVectorStore(url=pg_url, collection=table)
    clean = PgVectorStore(url=pg_url, collection=reference["table"])
    assert set(crashed.document_fingerprints("docs:")) == {"docs:a.md", "docs:b.md", "docs:d.md"}
    for doc_id in ("docs:a.md", "docs:b.md", "docs:d.md"):
        assert [c.chunk_id for c in crashed.document_chunks(doc_id, audiences=None)] == \
            [c.chunk_id for c in clean.document_chunks(doc_id, audiences=None)]
    assert crashed.count() == clean.count()
    assert all("first version" not in c.content for c in crashed.document_chunks("docs:a.md", audiences=None))
    crashed.close()
    clean.close()
