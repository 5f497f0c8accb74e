"""FirestoreBudgets: question limits held by reservation, dollar counters by increments.

A question takes one of the ``limit`` numbered slots of each identity's window (``{collection}/{window}-{hash}-{n}``)
with a ``create``, which fails when the slot is taken: at most ``limit`` questions get in, however many ask at once,
and no transaction is needed (contended transactions on one document mostly abort). A question refused by one
identity gives back the slots it took of the others. Dollars spent are one document per identity and window,
``Increment``-ed after each answer and read before each question. Every document carries ``expires_at`` for a
Firestore TTL policy to delete old windows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from askflow.domain.budgets import TOTAL, BudgetLimits, counter_id
from askflow.ports import Budgets


class FirestoreBudgets(Budgets):
    def __init__(self, *, client: Any, collection: str, limits: BudgetLimits) -> None:
        self._client = client
        self._collection = collection
        self._limits = limits

    def _stamp(self, at: dt.datetime) -> tuple[int, dict[str, Any]]:
        start, end = self._limits.window(at)
        return start, {"window_start": dt.datetime.fromtimestamp(start, dt.UTC),
                       "expires_at": dt.datetime.fromtimestamp(end, dt.UTC) + dt.timedelta(days=1)}

    def admit(self, identities: Sequence[str], *, at: dt.datetime) -> None:
        start, stamp = self._stamp(at)
        taken = []
        try:
            for identity in [*dict.fromkeys(identities), TOTAL]:
                counter = counter_id(identity, start)
                usd = self._limits.limit(identity, "usd")
                if usd is not None and self._spent_usd(counter) >= usd:
                    raise self._limits.over(identity, "usd", at=at)
                questions = self._limits.limit(identity, "questions")
                if questions is not None:
                    slot = self._reserve(counter, int(questions), stamp)
                    if slot is None:
                        raise self._limits.over(identity, "questions", at=at)
                    taken.append(slot)
        except BaseException:
            for slot in taken:
                slot.delete()
            raise

    def _spent_usd(self, counter: str) -> float:
        snapshot = self._client.collection(self._collection).document(counter).get()
        return float((snapshot.to_dict() or {}).get("usd", 0.0)) if snapshot.exists else 0.0

    def _reserve(self, counter: str, limit: int, stamp: dict[str, Any]):
        """A free slot of ``counter`` (its reference), or ``None`` when all ``limit`` are taken. The search starts
        at the number taken (a count query), so a busy window costs few attempts."""
        from google.api_core.exceptions import AlreadyExists
        from google.cloud.firestore_v1.base_query import FieldFilter

        slots = self._client.collection(self._collection)
        taken = int(slots.where(filter=FieldFilter("counter", "==", counter)).count().get()[0][0].value)
        if taken >= limit:
            return None
        for first in (taken, 0):  # then from the start: slots given back leave gaps below the count
            for n in range(first, limit):
                ref = slots.document(f"{counter}-{n}")
                try:
                    ref.create(stamp | {"counter": counter})
                    return ref
                except AlreadyExists:
                    continue
        return None

    def spend(self, identities: Sequence[str], usd: float, *, at: dt.datetime) -> None:
        from google.cloud import firestore

        if usd <= 0:
            return
        start, stamp = self._stamp(at)
        batch = self._client.batch()
        for identity in [*dict.fromkeys(identities), TOTAL]:
            ref = self._client.collection(self._collection).document(counter_id(identity, start))
            batch.set(ref, stamp | {"usd": firestore.Increment(usd)}, merge=True)
        batch.commit()
