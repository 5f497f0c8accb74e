"""The evaluation loop's handlers: which writes need grading, grading in batches, and answers as sources.

Duplicates never cause duplicate work: an event names a request and the *revision* it saw (its status and
ratings); a request whose stored ``graded_revision`` already equals its current revision is skipped, and the
answer written to the vector store has a deterministic id.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from askflow.adapters.firestore_requests import utcnow
from askflow.domain.model import Document, RequestStatus, SourceKind, content_hash
from askflow.ingest.indexing import index_documents

log = logging.getLogger(__name__)


def request_revision(record: dict[str, Any] | None) -> str | None:
    """What grading depends on: a completed answer and its ratings. ``None`` when there is nothing to grade."""
    if not record or record.get("status") != RequestStatus.COMPLETE.value:
        return None
    ratings = {rater: r.get("positive") for rater, r in (record.get("ratings") or {}).items()}
    return content_hash(record.get("answer", ""), json.dumps(ratings, sort_keys=True))[:16]


def evaluation_event(old: dict[str, Any] | None, new: dict[str, Any] | None, request_id: str) -> dict | None:
    """The event to publish for a write of ``requests/{request_id}``, or ``None`` (grade writes included)."""
    revision = request_revision(new)
    if revision is None or revision == request_revision(old):
        return None
    return {"request_id": request_id, "revision": revision}


def grade_events(events: Sequence[dict[str, Any]], *, components, batch_size: int) -> dict[str, Any]:
    """Grade the requests named by ``events`` in batches of ``batch_size``; returns the run summary."""
    requests, grader = components.requests, components.grader
    summary: dict[str, Any] = {"run_id": uuid.uuid4().hex, "method": grader.method, "events": len(events),
                               "graded": 0, "good": 0, "rejected": Counter(), "skipped": 0, "llm_calls": 0,
                               "tokens": 0, "started_at": utcnow()}
    items = []
    for request_id in dict.fromkeys(e["request_id"] for e in events if isinstance(e.get("request_id"), str)):
        record = requests.get(request_id)
        revision = request_revision(record)
        if revision is None or record.get("graded_revision") == revision:
            summary["skipped"] += 1
            continue
        items.append(record | {"request_id": request_id, "revision": revision})
    if items:  # a rejected answer is deleted from the store: the collection must exist even on a fresh deploy
        components.store.ensure_collection(components.embeddings.dimension)
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        grades, usage = grader.grade(batch)
        summary["llm_calls"] += len(usage)
        summary["tokens"] += sum(u.prompt_tokens + u.completion_tokens for u in usage)
        by_id = {g.id: g for g in grades}
        for record in batch:
            _apply(record, by_id[record["request_id"]], components=components, summary=summary)
    summary["expected_batches"] = math.ceil(len(items) / batch_size) if items else 0
    summary["rejected"] = dict(summary["rejected"])
    summary["finished_at"] = utcnow()
    requests.save_evaluation_run(summary["run_id"], summary)
    log.info("evaluation run %s", summary)
    return summary


def _apply(record: dict[str, Any], grade, *, components, summary: dict[str, Any]) -> None:
    from askflow.grading import verdict

    is_good, reason = verdict(grade, record)
    components.requests.update(record["request_id"], {
        "grade": grade.model_dump() | {"method": components.grader.method},
        "is_good": is_good,
        "grade_reason": reason,
        "graded_at": utcnow(),
        "graded_revision": record["revision"],
    })
    summary["graded"] += 1
    if is_good:
        summary["good"] += 1
        store_answer(record, components=components)
    else:
        summary["rejected"][reason.split(":")[0]] += 1
        components.store.delete_documents([answer_doc_id(record["request_id"], components.settings)])


def answer_doc_id(request_id: str, settings) -> str:
    return f"{settings.answers_source}:{request_id}"


def store_answer(record: dict[str, Any], *, components) -> None:
    """A good public answer becomes a source of kind "answered question", linked to what it cited."""
    settings, store = components.settings, components.store
    store.ensure_collection(components.embeddings.dimension)
    current = store.document_fingerprints("")
    cited = {s["doc_id"]: current.get(s["doc_id"]) for s in record.get("sources", []) if s.get("doc_id") in current}
    document = Document(
        doc_id=answer_doc_id(record["request_id"], settings),
        text=f"Question: {record['question']}\n\nAnswer: {record['answer']}",
        title=record["question"].strip().splitlines()[0][:150],
        url=f"{settings.answers_base_url.rstrip('/')}/{record['request_id']}",
        kind=SourceKind.ANSWERED_QUESTION,
        metadata={"format": "text", "cited": cited, "cited_urls": [s.get("url") for s in record.get("sources", [])]},
    )
    index_documents([document], store=store, embeddings=components.embeddings, strategy=components.strategy(),
                    source=settings.answers_source, prune=False)
