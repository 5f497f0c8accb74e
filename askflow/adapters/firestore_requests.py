"""FirestoreRequestStore: ``{collection}/{request_id}`` documents; state changes are conditional on what was read
(a write with an update-time precondition, or a transaction)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from askflow.domain.errors import Duplicate
from askflow.domain.model import RequestStatus
from askflow.ports import RequestStore


_CONDITIONAL_ATTEMPTS = 5


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class FirestoreRequestStore(RequestStore):
    def __init__(self, *, client: Any, collection: str, runs_collection: str) -> None:
        self._client = client
        self._collection = collection
        self._runs_collection = runs_collection
        self._claims: dict[str, Any] = {}  # request id -> update time of this process's claim, for finish()
        self._claims_lock = threading.Lock()

    def _ref(self, request_id: str):
        return self._client.collection(self._collection).document(request_id)

    def create(self, request_id: str, record: dict[str, Any]) -> None:
        from google.api_core.exceptions import AlreadyExists

        try:
            self._ref(request_id).create(record)
        except AlreadyExists as error:
            raise Duplicate(f"request {request_id} exists") from error

    def get(self, request_id: str) -> dict[str, Any] | None:
        snapshot = self._ref(request_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def claim(self, request_id: str, *, lease_s: float) -> dict[str, Any] | None:
        """A read and a write conditional on the document's update time (two round trips; a transaction takes
        three): if anyone else wrote in between, the write is refused and the claim reads again."""
        from google.api_core.exceptions import FailedPrecondition

        ref = self._ref(request_id)
        for _ in range(_CONDITIONAL_ATTEMPTS):
            snapshot = ref.get()
            if not snapshot.exists:
                return None
            record = snapshot.to_dict()
            status = RequestStatus(record["status"])
            now = utcnow()
            if status.terminal:
                return None
            claimed_at = record.get("claimed_at")
            if status is RequestStatus.ANSWERING and claimed_at and (now - claimed_at).total_seconds() < lease_s:
                return None
            changes = {
                "status": RequestStatus.ANSWERING.value,
                "claimed_at": now,
                "attempts": int(record.get("attempts", 0)) + 1,
                "updated_at": now,
            }
            try:
                written = ref.update(changes, option=self._client.write_option(last_update_time=snapshot.update_time))
            except FailedPrecondition:
                continue
            with self._claims_lock:
                self._claims[request_id] = written.update_time
            return record | changes
        return None  # contended that hard: another worker is on it

    def finish(self, request_id: str, fields: dict[str, Any]) -> bool:
        """One conditional write when nothing touched the request since this process claimed it (the usual case);
        otherwise a transaction that refuses to overwrite a terminal state."""
        from google.api_core.exceptions import FailedPrecondition
        from google.cloud import firestore

        ref = self._ref(request_id)
        with self._claims_lock:
            claimed = self._claims.pop(request_id, None)
        if claimed is not None:
            try:
                unchanged = self._client.write_option(last_update_time=claimed)
                ref.update(fields | {"updated_at": utcnow()}, option=unchanged)
                return True
            except FailedPrecondition:
                pass

        @firestore.transactional
        def finish_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists or RequestStatus(snapshot.get("status")).terminal:
                return False
            transaction.update(ref, fields | {"updated_at": utcnow()})
            return True

        return finish_in(self._client.transaction(), ref)

    def unfinished(self, *, updated_before: Any, limit: int) -> list[dict[str, Any]]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        unfinished = [s.value for s in RequestStatus if not s.terminal]
        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("status", "in", unfinished))
            .where(filter=FieldFilter("updated_at", "<", updated_before))
            .order_by("updated_at")
            .limit(limit)
        )
        return [snapshot.to_dict() for snapshot in query.stream()]

    def thread_history(self, thread_id: str, *, before: Any, limit: int = 4) -> list[tuple[str, str]]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("thread_id", "==", thread_id))
            .where(filter=FieldFilter("created_at", "<", before))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        turns = [s.to_dict() for s in query.stream()]
        return [(t["question"], t.get("answer", "")) for t in reversed(turns)
                if t.get("status") == RequestStatus.COMPLETE.value]

    def update(self, request_id: str, fields: dict[str, Any]) -> None:
        self._ref(request_id).update(fields)

    def save_evaluation_run(self, run_id: str, summary: dict[str, Any]) -> None:
        self._client.collection(self._runs_collection).document(run_id).set(summary)

    def rate(self, request_id: str, rater: str, rating: dict[str, Any]) -> dict[str, Any] | None:
        from google.cloud import firestore
        from google.cloud.firestore_v1.field_path import FieldPath

        @firestore.transactional
        def rate_in(transaction, ref):
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return None
            record = snapshot.to_dict()
            if record.get("status") == RequestStatus.COMPLETE.value:
                transaction.update(ref, {FieldPath("ratings", rater).to_api_repr(): rating,
                                         "rated_at": rating["at"]})
                record.setdefault("ratings", {})[rater] = rating
            return record

        return rate_in(self._client.transaction(), self._ref(request_id))

    def recent_good(self, limit: int) -> list[dict[str, Any]]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.collection(self._collection)
            .where(filter=FieldFilter("is_good", "==", True))
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        return [snapshot.to_dict() for snapshot in query.stream()]
