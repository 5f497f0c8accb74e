"""FirestoreRequestStore, FirestoreRuns (evaluation and fine-tuning run records) and FirestoreInsightsReports:
``{collection}/{id}`` documents.

This module is where a ``Request`` becomes a Firestore document and back (``to_document``, ``from_document``). State
changes are conditional on what was read: a write with an update-time precondition, or a transaction.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import ValidationError

from askflow.domain.clock import utcnow
from askflow.domain.errors import Duplicate
from askflow.domain.model import (
    Approval,
    AuditEntry,
    Escalation,
    EvaluationRun,
    FinetuneRun,
    Graded,
    Rating,
    Request,
    RequestStatus,
    TeamAnswer,
)
from askflow.insights.model import InsightsReport
from askflow.ports import EvaluationRuns, FinetuneRuns, InsightsReports, RequestStore

log = logging.getLogger(__name__)
_CONDITIONAL_ATTEMPTS = 5


def to_document(request: Request, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """The Firestore fields of a request (all, or only ``fields``); times stay datetimes (Firestore timestamps)."""
    return request.model_dump(include=fields, exclude_none=fields is None)


def from_document(fields: dict[str, Any] | None) -> Request | None:
    """A stored document as a ``Request``; ``None`` for no document or one that is not a request."""
    if not fields:
        return None
    try:
        return Request.model_validate(fields)
    except ValidationError as error:
        log.error("a document in the requests collection is not a request: %s", error)
        return None


class FirestoreRequestStore(RequestStore):
    """Requests as ``{collection}/{id}``; a worker's progress as ``{collection}/{id}/{progress_collection}/answer``,
    outside the ``{collection}/{id}`` path pattern the grading trigger matches, so that a streamed answer's partial
    writes fire nothing and leave the request document to its few writes (claim, heartbeats, outcome).

    Every write a worker makes under its claim is fenced by the claim (``Request.held_by``, ``accepts_outcome``):
    in one write conditional on the update time of this process's own latest fenced write, or else in a transaction
    that reads the stored attempt. No write of this adapter that a worker makes is unconditional, so a stale update
    time can never let a superseded worker through.
    """

    def __init__(self, *, client: Any, collection: str, progress_collection: str = "progress",
                 audit_collection: str = "audit") -> None:
        self._client = client
        self._collection = collection
        self._audit_collection = audit_collection
        self._progress_collection = progress_collection
        # request id -> (attempt, update time of this process's latest fenced write under that claim; None: unknown,
        # the next write goes through a transaction)
        self._claims: dict[str, tuple[int, Any]] = {}
        self._claims_lock = threading.Lock()

    def _ref(self, request_id: str):
        return self._client.collection(self._collection).document(request_id)

    def _progress_ref(self, request_id: str):
        return self._ref(request_id).collection(self._progress_collection).document("answer")

    def create(self, request: Request) -> None:
        from google.api_core.exceptions import AlreadyExists

        try:
            self._ref(request.request_id).create(to_document(request))
        except AlreadyExists as error:
            raise Duplicate(f"request {request.request_id} exists") from error

    def get(self, request_id: str) -> Request | None:
        """The request; while it is answering, with the answering attempt's progress (an older attempt's is not
        shown)."""
        snapshot = self._ref(request_id).get()
        request = from_document(snapshot.to_dict()) if snapshot.exists else None
        if request is None or request.status is not RequestStatus.ANSWERING:
            return request
        progress = self._progress_ref(request_id).get()
        fields = progress.to_dict() if progress.exists else None
        if not fields or fields.get("attempt") != request.attempts:
            return request
        return Request.model_validate(request.model_dump() | {name: fields[name] for name in Request.PROGRESS_FIELDS
                                                               if name in fields})

    def claim(self, request_id: str, *, lease_s: float) -> Request | None:
        """A read and a write conditional on the document's update time (two round trips; a transaction takes
        three): if anyone else wrote in between, the write is refused and the claim reads again."""
        from google.api_core.exceptions import Aborted, FailedPrecondition

        ref = self._ref(request_id)
        for _ in range(_CONDITIONAL_ATTEMPTS):
            snapshot = ref.get()
            request = from_document(snapshot.to_dict()) if snapshot.exists else None
            now = utcnow()
            if request is None or not request.claimable(now, lease_s):
                return None
            claimed = request.claimed(now)
            changes = to_document(claimed, frozenset({"status", "claimed_at", "attempts", "updated_at",
                                                      "partial_answer", "sources"}))
            try:
                written = ref.update(changes, option=self._client.write_option(last_update_time=snapshot.update_time))
            except (FailedPrecondition, Aborted):  # written meanwhile, or held by another's transaction: read again
                continue
            with self._claims_lock:
                self._claims[request_id] = (claimed.attempts, written.update_time)
            return claimed
        return None  # contended that hard: another worker is on it

    def heartbeat(self, request: Request, *, at) -> bool:
        return self._fenced_update(request, {"heartbeat_at": at}, holds=lambda stored: stored.held_by(request))

    def reply_started(self, request: Request) -> bool:
        return self._fenced_update(request, to_document(request, frozenset({"slack"})),
                                   holds=lambda stored: stored.held_by(request))

    def finish(self, request: Request) -> bool:
        """One conditional write when nothing else touched the request since this process's last fenced write under
        its claim (the usual case); otherwise a transaction that checks ``Request.accepts_outcome``."""
        fields = to_document(request, Request.OUTCOME_FIELDS) | {"updated_at": utcnow()}
        return self._fenced_update(request, fields, holds=lambda stored: stored.accepts_outcome(request), release=True)

    def _fenced_update(self, request: Request, fields: dict[str, Any], *, holds, release: bool = False) -> bool:
        """Update the request with ``fields`` if the stored one ``holds``; returns whether it wrote. ``release``: the
        claim's last write (the outcome): its token is taken out first, so no later write of this process can use
        it."""
        from google.api_core.exceptions import Aborted, FailedPrecondition
        from google.cloud import firestore

        ref = self._ref(request.request_id)
        with self._claims_lock:
            attempt, update_time = self._claims.get(request.request_id, (None, None))
            if release and attempt == request.attempts:
                del self._claims[request.request_id]
        if attempt == request.attempts and update_time is not None:
            try:
                written = ref.update(fields, option=self._client.write_option(last_update_time=update_time))
                self._claimed_at(request, written.update_time)
                return True
            except (FailedPrecondition, Aborted):
                pass

        @firestore.transactional
        def update_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            stored = from_document(snapshot.to_dict()) if snapshot.exists else None
            if stored is None or not holds(stored):
                return False
            transaction.update(ref, fields)
            return True

        written = update_in(self._client.transaction(), ref)
        self._claimed_at(request, None)  # the transaction's update time is not known here
        return written

    def _claimed_at(self, request: Request, update_time) -> None:
        """This process's claim of ``request`` now stands at ``update_time`` (its own fenced write), if it holds it."""
        with self._claims_lock:
            if self._claims.get(request.request_id, (None,))[0] == request.attempts:
                self._claims[request.request_id] = (request.attempts, update_time)

    def progress(self, request: Request) -> bool:
        """A transaction: the request is read (its claim checked) and the progress subdocument written, so the
        request itself is not written."""
        from google.cloud import firestore

        ref, progress_ref = self._ref(request.request_id), self._progress_ref(request.request_id)
        fields = to_document(request, Request.PROGRESS_FIELDS) | {"attempt": request.attempts}

        @firestore.transactional
        def progress_in(transaction):
            snapshot = ref.get(transaction=transaction)
            stored = from_document(snapshot.to_dict()) if snapshot.exists else None
            if stored is None or not stored.held_by(request):
                return False
            transaction.set(progress_ref, fields)
            return True

        return progress_in(self._client.transaction())

    def claim_delivery(self, request_id: str, *, lease_s: float) -> bool:
        """A transaction: read, check ``Request.delivery_claimable``, write ``delivering_at``."""
        from google.cloud import firestore

        @firestore.transactional
        def claim_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            stored = from_document(snapshot.to_dict()) if snapshot.exists else None
            now = utcnow()
            if stored is None or not stored.delivery_claimable(now, lease_s):
                return False
            transaction.update(ref, {"delivering_at": now})
            return True

        return claim_in(self._client.transaction(), self._ref(request_id))

    def delivered(self, request_id: str, *, at) -> None:
        self._ref(request_id).update({"delivered_at": at})

    def unfinished(self, *, updated_before, limit: int) -> list[Request]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        unfinished = [s.value for s in RequestStatus if not s.terminal]
        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("status", "in", unfinished))
            .where(filter=FieldFilter("updated_at", "<", updated_before))
            .order_by("updated_at")
            .limit(limit)
        )
        return self._requests(query)

    def thread_history(self, thread_id: str, *, before, limit: int = 4) -> list[tuple[str, str]]:
        return [(t.question, t.answer or "") for t in self._thread(thread_id, before=before, limit=limit)]

    def thread_readers(self, thread_id: str, *, before, limit: int = 4) -> list[list[str] | None]:
        return [t.readers for t in self._thread(thread_id, before=before, limit=limit)]

    def _thread(self, thread_id: str, *, before, limit: int) -> list[Request]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("thread_id", "==", thread_id))
            .where(filter=FieldFilter("created_at", "<", before))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        turns = self._requests(query)
        return [t for t in reversed(turns) if t.status is RequestStatus.COMPLETE]

    def mark_requeued(self, request_id: str, *, at) -> None:
        self._ref(request_id).update({"updated_at": at, "requeued_at": at})

    def _transact(self, request_id: str, change):
        """Read the request and write what ``change`` makes of it, in one transaction: ``change(request,
        transaction)`` (``request`` ``None`` when unknown) returns the fields to update (``None``: no write) and the
        result."""
        from google.cloud import firestore

        @firestore.transactional
        def run(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            fields, result = change(from_document(snapshot.to_dict()) if snapshot.exists else None, transaction)
            if fields:
                transaction.update(ref, fields)
            return result

        return run(self._client.transaction(), self._ref(request_id))

    def save_grade(self, request_id: str, graded: Graded) -> bool:
        """In a transaction that reads the request: a verdict on an older revision writes nothing."""
        def change(request, _):
            if request is None or request.revision() != graded.graded_revision:
                return None, False
            return graded.model_dump(), True

        return self._transact(request_id, change)

    def rate(self, request_id: str, rater: str, rating: Rating) -> Request | None:
        from google.cloud.firestore_v1.field_path import FieldPath

        def change(request, _):
            if request is None or request.status is not RequestStatus.COMPLETE:
                return None, request
            return ({FieldPath("ratings", rater).to_api_repr(): rating.model_dump(), "rated_at": rating.at},
                    request.model_copy(update={"ratings": request.ratings | {rater: rating}, "rated_at": rating.at}))

        return self._transact(request_id, change)

    def recent_good(self, limit: int) -> list[Request]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("verified", "==", True))
            .where(filter=FieldFilter("in_feed", "==", True))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._requests(query)

    def review_queue(self, limit: int) -> list[Request]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("in_review", "==", True))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._requests(query)

    def approve(self, request_id: str, approval: Approval) -> Request | None:
        """The decision and its audit entry in one transaction (the entry's id is the decision's: written again,
        it is the same entry)."""
        entry = AuditEntry.of(request_id, approval)
        audit = self._client.collection(self._audit_collection).document(entry.entry_id)

        def change(request, transaction):
            if request is None or request.status is not RequestStatus.COMPLETE:
                return None, request
            transaction.set(audit, entry.model_dump())
            return {"approval": approval.model_dump()}, request.model_copy(update={"approval": approval})

        return self._transact(request_id, change)

    def escalate(self, request_id: str, escalation: Escalation, *, replacing: Escalation | None = None) -> bool:
        def change(request, _):
            if request is None or not request.terminal or not Escalation.settable(request.escalation, replacing):
                return None, False
            return {"escalation": escalation.model_dump()}, True

        return self._transact(request_id, change)

    def settle_escalation(self, request_id: str, escalation: Escalation) -> bool:
        def change(request, _):
            if request is None or request.escalation is None or request.escalation.state != "posting":
                return None, False
            return {"escalation": escalation.model_dump()}, True

        return self._transact(request_id, change)

    def claim_escalation_delivery(self, request_id: str, *, lease_s: float) -> bool:
        now = utcnow()

        def change(request, _):
            if request is None or request.escalation is None or \
                    not request.escalation.delivery_claimable(now, lease_s):
                return None, False
            return {"escalation.delivering_at": now}, True

        return self._transact(request_id, change)

    def answer_escalation(self, request_id: str, answer: TeamAnswer) -> Request | None:
        def change(request, _):
            if request is None or request.escalation is None or request.escalation.answer is not None:
                return None, request
            return ({"escalation.state": "answered", "escalation.answer": answer.model_dump()},
                    request.model_copy(update={"escalation": request.escalation.model_copy(
                        update={"state": "answered", "answer": answer})}))

        return self._transact(request_id, change)

    def mark_team_answer_internal(self, request_id: str, reply_ts: str, audience: str) -> Request | None:
        def change(request, _):
            team = request.team_answer if request is not None else None
            if team is None or team.ts != reply_ts or team.internal is not None:
                return None, request
            return ({"in_feed": False, "escalation.answer.internal": audience},
                    request.model_copy(update={"in_feed": False, "escalation": request.escalation.model_copy(
                        update={"answer": team.model_copy(update={"internal": audience})})}))

        return self._transact(request_id, change)

    def relabel(self, request_id: str, labels) -> bool:
        def change(request, _):
            if request is None or not request.terminal:
                return None, False
            relabelled = request.with_readers(request.relabelled(labels))
            if (relabelled.readers, relabelled.in_feed) == (request.readers, request.in_feed):
                return None, False
            return {"readers": relabelled.readers, "in_feed": relabelled.in_feed}, True

        return self._transact(request_id, change)

    def escalation_delivered(self, request_id: str, *, at) -> None:
        self._ref(request_id).update({"escalation.delivered_at": at})

    def _where(self, *filters):
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._client.collection(self._collection)
        for field, value in filters:
            query = query.where(filter=FieldFilter(field, "==", value))
        return query

    def escalated_in(self, thread: str) -> Request | None:
        found = self._requests(self._where(("escalation.thread", thread)).limit(1))
        return found[0] if found else None

    def open_escalations(self, question_key: str) -> list[Request]:
        return self._requests(self._where(("escalation.state", "open"), ("escalation.question_key", question_key))
                              .limit(20))

    def joined_to(self, request_id: str) -> list[Request]:
        return self._requests(self._where(("escalation.joined", request_id)).limit(500))

    def escalations(self, limit: int) -> list[Request]:
        from google.cloud import firestore

        return self._requests(self._client.collection(self._collection)
                              .order_by("escalation.asked_at", direction=firestore.Query.DESCENDING).limit(limit))

    def audit_log(self, limit: int) -> list[AuditEntry]:
        from google.cloud import firestore

        query = self._client.collection(self._audit_collection).order_by(
            "at", direction=firestore.Query.DESCENDING).limit(limit)
        return [AuditEntry.model_validate(snapshot.to_dict()) for snapshot in query.stream()]

    def created_between(self, start, end, *, page_size: int = 500):
        """Paged by ``created_at`` (then id, for requests created in the same instant), a query per page."""
        from google.cloud.firestore_v1.base_query import FieldFilter
        from google.cloud.firestore_v1.field_path import FieldPath

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("created_at", ">=", start))
            .where(filter=FieldFilter("created_at", "<", end))
            .order_by("created_at")
            .order_by(FieldPath.document_id())
            .limit(page_size)
        )
        last = None
        while True:
            page = list((query.start_after(last) if last is not None else query).stream())
            for snapshot in page:
                if (request := from_document(snapshot.to_dict())) is not None:
                    yield request
            if len(page) < page_size:
                return
            last = page[-1]

    def citing(self, doc_id: str, *, limit: int = 500) -> list[Request]:
        """An array-contains query on ``cited_docs``, newest first (the composite index ``requests_citing_document``,
        infra/firestore.tf)."""
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self._client.collection(self._collection)
                 .where(filter=FieldFilter("cited_docs", "array_contains", doc_id))
                 .order_by("created_at", direction=firestore.Query.DESCENDING).limit(limit))
        return self._requests(query)

    def cached_copies(self, request_id: str, *, limit: int = 500) -> list[Request]:
        """An equality query on ``cached_from`` (Firestore's automatic single-field index)."""
        return self._requests(self._where(("cached_from", request_id)).limit(limit))

    def delete(self, request_id: str) -> bool:
        """The worker's progress first, then the request, so a deletion that stops half-way is found again."""
        self._progress_ref(request_id).delete()
        ref = self._ref(request_id)
        existed = ref.get().exists
        ref.delete()
        with self._claims_lock:
            self._claims.pop(request_id, None)
        return existed

    @staticmethod
    def _requests(query) -> list[Request]:
        return [request for snapshot in query.stream() if (request := from_document(snapshot.to_dict()))]


class FirestoreRuns(EvaluationRuns, FinetuneRuns):
    """Run records (evaluation runs, fine-tuning runs): one document per run, named by its ``run_id``."""

    def __init__(self, *, client: Any, collection: str) -> None:
        self._client = client
        self._collection = collection

    def save(self, run: EvaluationRun | FinetuneRun) -> None:
        self._client.collection(self._collection).document(run.run_id).set(run.model_dump())


class FirestoreInsightsReports(InsightsReports):
    """One document per period (``report_id``), its admin view in it: a rerun for the same period replaces it."""

    def __init__(self, *, client: Any, collection: str) -> None:
        self._client = client
        self._collection = collection

    def save(self, report: InsightsReport) -> None:
        self._client.collection(self._collection).document(report.report_id).set(report.document())

    def get(self, report_id: str) -> InsightsReport | None:
        snapshot = self._client.collection(self._collection).document(report_id).get()
        return InsightsReport.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def latest(self) -> InsightsReport | None:
        from google.cloud import firestore

        query = self._client.collection(self._collection).order_by(
            "period_end", direction=firestore.Query.DESCENDING).limit(1)
        found = [InsightsReport.model_validate(snapshot.to_dict()) for snapshot in query.stream()]
        return found[0] if found else None
