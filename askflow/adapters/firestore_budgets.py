"""FirestoreBudgets: question and lookup limits held by reservation, dollar counters by increments.

A question (or a lookup) takes one of the ``limit`` numbered slots of each identity's window
(``{collection}/{window}-{hash}-{n}``; lookups' are ``...-{hash}-lookups-{n}``) with a ``create``, which fails when the
slot is taken: at most ``limit`` get in, however many ask at once, and no transaction is needed (contended
transactions on one document mostly abort). A charge refused by one identity gives back the slots it took of the
others. A slot records the key it was taken for (a request id): a key holding a slot of a counter is not charged
there again, and of two admits of one key that race, the slot created first is kept and the other given back. Dollars
spent are one document per identity and window, ``Increment``-ed after each answer and read before each charge.
Every document carries ``expires_at`` for a Firestore TTL policy to delete old windows."""

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

    def admit(self, identities: Sequence[str], *, at: dt.datetime, key: str | None = None,
              kind: str = "questions") -> None:
        start, stamp = self._stamp(at)
        taken = []
        try:
            for identity in [*dict.fromkeys(identities), TOTAL]:
                counter = counter_id(identity, start)
                slots = counter if kind == "questions" else f"{counter}-{kind}"
                limit = self._limits.limit(identity, kind)
                if limit is not None and key is not None and self._held(slots, key):
                    continue  # this key was counted here already
                usd = self._limits.limit(identity, "usd")
                if usd is not None and self._spent_usd(counter) >= usd:
                    raise self._limits.over(identity, "usd", at=at)
                if limit is None:
                    continue
                slot = self._reserve(slots, int(limit), stamp | {"key": key})
                first = self._held(slots, key)[:1] if key is not None else []
                if first and (slot is None or first[0].id != slot.id):
                    if slot is not None:  # an admit of the same key, racing this one, holds an earlier slot
                        slot.delete()
                    continue
                if slot is None:
                    raise self._limits.over(identity, kind, at=at)
                taken.append(slot)
        except BaseException:
            for slot in taken:
                slot.delete()
            raise

    def _held(self, slots: str, key: str) -> list[Any]:
        """The slots of the counter ``slots`` that ``key`` holds (references), the first created first."""
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (self._client.collection(self._collection).where(filter=FieldFilter("counter", "==", slots))
                 .where(filter=FieldFilter("key", "==", key)))
        return [snapshot.reference for snapshot in sorted(query.stream(), key=lambda s: (s.create_time, s.id))]

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

    def spend(self, identities: Sequence[str], usd: float, *, at: dt.datetime, key: str | None = None) -> None:
        """One batch, atomic: the increments and, with ``key``, the creation of ``{window}-spent-{key}``, which fails
        the whole batch when that key was counted already."""
        from google.api_core.exceptions import AlreadyExists
        from google.cloud import firestore

        if usd <= 0:
            return
        start, stamp = self._stamp(at)
        batch = self._client.batch()
        if key is not None:
            batch.create(self._client.collection(self._collection).document(f"{start}-spent-{key}"), stamp)
        for identity in [*dict.fromkeys(identities), TOTAL]:
            ref = self._client.collection(self._collection).document(counter_id(identity, start))
            batch.set(ref, stamp | {"usd": firestore.Increment(usd)}, merge=True)
        try:
            batch.commit()
        except AlreadyExists:
            return  # counted before: a redelivery
