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
from askflow.domain.model import EvaluationRun, FinetuneRun, Graded, Rating, Request, RequestStatus
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
    def __init__(self, *, client: Any, collection: str) -> None:
        self._client = client
        self._collection = collection
        # request id -> (attempt, update time of this process's latest write under that claim), for the conditional
        # writes of progress() and finish(): the one-round-trip path is taken only by the attempt that claimed
        self._claims: dict[str, tuple[int, Any]] = {}
        self._claims_lock = threading.Lock()

    def _ref(self, request_id: str):
        return self._client.collection(self._collection).document(request_id)

    def create(self, request: Request) -> None:
        from google.api_core.exceptions import AlreadyExists

        try:
            self._ref(request.request_id).create(to_document(request))
        except AlreadyExists as error:
            raise Duplicate(f"request {request.request_id} exists") from error

    def get(self, request_id: str) -> Request | None:
        snapshot = self._ref(request_id).get()
        return from_document(snapshot.to_dict()) if snapshot.exists else None

    def claim(self, request_id: str, *, lease_s: float) -> Request | None:
        """A read and a write conditional on the document's update time (two round trips; a transaction takes
        three): if anyone else wrote in between, the write is refused and the claim reads again."""
        from google.api_core.exceptions import FailedPrecondition

        ref = self._ref(request_id)
        for _ in range(_CONDITIONAL_ATTEMPTS):
            snapshot = ref.get()
            request = from_document(snapshot.to_dict()) if snapshot.exists else None
            now = utcnow()
            if request is None or not request.claimable(now, lease_s):
                return None
            claimed = request.claimed(now)
            changes = to_document(claimed, frozenset({"status", "claimed_at", "attempts", "updated_at"}))
            try:
                written = ref.update(changes, option=self._client.write_option(last_update_time=snapshot.update_time))
            except FailedPrecondition:
                continue
            with self._claims_lock:
                self._claims[request_id] = (claimed.attempts, written.update_time)
            return claimed
        return None  # contended that hard: another worker is on it

    def progress(self, request: Request) -> bool:
        """One write conditional on this process's claim (its update time, moved on by each of its own writes); when
        anything else wrote meanwhile, a transaction that checks the claim by its attempt number."""
        from google.api_core.exceptions import FailedPrecondition
        from google.cloud import firestore

        ref = self._ref(request.request_id)
        fields = to_document(request, Request.PROGRESS_FIELDS)
        claimed = self._claim_of(request)
        if claimed is not None:
            try:
                written = ref.update(fields, option=self._client.write_option(last_update_time=claimed))
                self._claimed_at(request.request_id, written.update_time)
                return True
            except FailedPrecondition:
                pass

        @firestore.transactional
        def progress_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            stored = from_document(snapshot.to_dict()) if snapshot.exists else None
            if stored is None or stored.status is not RequestStatus.ANSWERING or stored.attempts != request.attempts:
                return False
            transaction.update(ref, fields)
            return True

        return progress_in(self._client.transaction(), ref)

    def _claimed_at(self, request_id: str, update_time) -> None:
        """This process's claim now stands at ``update_time`` (its own later write), if it still holds one."""
        with self._claims_lock:
            if request_id in self._claims:
                self._claims[request_id] = (self._claims[request_id][0], update_time)

    def _claim_of(self, request: Request, *, release: bool = False):
        """The update time this process's claim of ``request`` stands at, if this attempt is the one it claimed."""
        with self._claims_lock:
            attempt, update_time = self._claims.get(request.request_id, (None, None))
            if attempt != request.attempts:
                return None
            if release:
                del self._claims[request.request_id]
        return update_time

    def finish(self, request: Request) -> bool:
        """One conditional write when nothing touched the request since this process claimed it (the usual case);
        otherwise a transaction that refuses to overwrite a terminal state."""
        from google.api_core.exceptions import FailedPrecondition
        from google.cloud import firestore

        ref = self._ref(request.request_id)
        fields = to_document(request, Request.OUTCOME_FIELDS) | {"updated_at": utcnow()}
        claimed = self._claim_of(request, release=True)
        if claimed is not None:
            try:
                ref.update(fields, option=self._client.write_option(last_update_time=claimed))
                return True
            except FailedPrecondition:
                pass

        @firestore.transactional
        def finish_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists or RequestStatus(snapshot.get("status")).terminal:
                return False
            transaction.update(ref, fields)
            return True

        return finish_in(self._client.transaction(), ref)

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
        return [(t.question, t.answer or "") for t in reversed(turns) if t.status is RequestStatus.COMPLETE]

    def heartbeat(self, request_id: str, *, at) -> None:
        """One write; this process's claim then stands at the heartbeat's update time, so ``finish`` keeps its one
        conditional write."""
        written = self._ref(request_id).update({"heartbeat_at": at})
        self._claimed_at(request_id, written.update_time)

    def mark_requeued(self, request_id: str, *, at) -> None:
        self._ref(request_id).update({"updated_at": at, "requeued_at": at})

    def save_grade(self, request_id: str, graded: Graded) -> None:
        self._ref(request_id).update(graded.model_dump())

    def rate(self, request_id: str, rater: str, rating: Rating) -> Request | None:
        from google.cloud import firestore
        from google.cloud.firestore_v1.field_path import FieldPath

        @firestore.transactional
        def rate_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            request = from_document(snapshot.to_dict()) if snapshot.exists else None
            if request is None or request.status is not RequestStatus.COMPLETE:
                return request
            transaction.update(ref, {FieldPath("ratings", rater).to_api_repr(): rating.model_dump(),
                                     "rated_at": rating.at})
            return request.model_copy(update={"ratings": request.ratings | {rater: rating}, "rated_at": rating.at})

        return rate_in(self._client.transaction(), self._ref(request_id))

    def recent_good(self, limit: int) -> list[Request]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("is_good", "==", True))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return self._requests(query)

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
    """One document per period (``report_id``): a rerun for the same period replaces it."""

    def __init__(self, *, client: Any, collection: str) -> None:
        self._client = client
        self._collection = collection

    def save(self, report: InsightsReport) -> None:
        self._client.collection(self._collection).document(report.report_id).set(report.model_dump(mode="json"))

    def get(self, report_id: str) -> InsightsReport | None:
        snapshot = self._client.collection(self._collection).document(report_id).get()
        return InsightsReport.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def latest(self) -> InsightsReport | None:
        from google.cloud import firestore

        query = self._client.collection(self._collection).order_by(
            "period_end", direction=firestore.Query.DESCENDING).limit(1)
        found = [InsightsReport.model_validate(snapshot.to_dict()) for snapshot in query.stream()]
        return found[0] if found else None
