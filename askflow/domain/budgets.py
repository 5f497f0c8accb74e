"""Budgets: how many questions, how many lookups (the MCP server's searches and document reads) and how many dollars
of model calls one asker and everyone together may spend in a window (a UTC day by default). The rules are here; a
store keeps the counters and applies them atomically.

A charge may carry a key (a request id): the same key is counted once per identity and window, however many times
it is admitted (a redelivery, two deliveries racing, a delivery after one that died between charging and storing).
A key already counted on an identity's counter is neither checked nor counted again there."""

from __future__ import annotations

import datetime as dt
import hashlib

from pydantic import BaseModel

from askflow.domain.errors import OverBudget

TOTAL = "all"  # the identity whose counter every question adds to
KINDS = ("questions", "lookups", "escalations")  # what a charge counts (dollars are spent, never charged)


class Spent(BaseModel):
    """One identity's counters in one window."""

    questions: int = 0
    lookups: int = 0
    escalations: int = 0
    usd: float = 0.0


class BudgetLimits(BaseModel):
    """``None``: no limit of that kind."""

    window_s: int = 86_400
    questions_per_asker: int | None = None
    usd_per_asker: float | None = None
    questions_total: int | None = None
    usd_total: float | None = None
    lookups_per_asker: int | None = None
    escalations_per_asker: int | None = None
    escalations_total: int | None = None

    @property
    def enforced(self) -> bool:
        return any(limit is not None for limit in (self.questions_per_asker, self.usd_per_asker,
                                                   self.questions_total, self.usd_total, self.lookups_per_asker,
                                                   self.escalations_per_asker, self.escalations_total))

    def window(self, at: dt.datetime) -> tuple[int, int]:
        """(start, end) of the window ``at`` falls in, in seconds since the epoch."""
        start = int(at.timestamp()) // self.window_s * self.window_s
        return start, start + self.window_s

    def limit(self, identity: str, kind: str) -> int | float | None:
        """The limit of ``kind`` ("questions", "lookups", "escalations" or "usd") for ``identity`` (``TOTAL`` or an
        asker's); lookups have no overall limit."""
        if identity == TOTAL:
            return {"questions": self.questions_total, "usd": self.usd_total,
                    "escalations": self.escalations_total}.get(kind)
        return {"questions": self.questions_per_asker, "lookups": self.lookups_per_asker,
                "escalations": self.escalations_per_asker, "usd": self.usd_per_asker}[kind]

    def over(self, identity: str, kind: str, *, at: dt.datetime) -> OverBudget:
        """The refusal for ``identity``'s ``kind`` limit: which limit, and when its window ends."""
        retry_after = max(1, self.window(at)[1] - int(at.timestamp()))
        total = identity == TOTAL
        limit = self.limit(identity, kind)
        amount = f"${limit:g} of model calls" if kind == "usd" else f"{limit} {kind}"
        return OverBudget(f"{'everyone' if total else 'this asker'}'s limit of {amount} per {_span(self.window_s)} "
                          f"is reached; ask again in {_span(retry_after)}",
                          limit=f"{kind}_{'total' if total else 'per_asker'}", retry_after_s=retry_after)

    def check(self, spent: dict[str, Spent], *, at: dt.datetime, kind: str = "questions") -> None:
        """Raise ``OverBudget`` if one more of ``kind`` (a question or a lookup) would go past a limit: ``spent``
        holds the counters of each identity to check (the askers' and ``TOTAL``'s). Dollars are checked as spent so
        far (an answer's cost is known once it is answered)."""
        for identity, counters in spent.items():
            usd, count = self.limit(identity, "usd"), self.limit(identity, kind)
            if usd is not None and counters.usd >= usd:
                raise self.over(identity, "usd", at=at)
            if count is not None and getattr(counters, kind) >= count:
                raise self.over(identity, kind, at=at)


def counter_id(identity: str, window_start: int) -> str:
    """A store key for an identity's counters in a window (identities hold user ids and addresses: hashed)."""
    return f"{window_start}-{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def _span(seconds: int) -> str:
    """A window's length or a wait, in words: "day", "3 hours", "42 minutes", "7 seconds"."""
    if seconds == 86_400:
        return "day"
    if seconds >= 3600:
        return f"{round(seconds / 3600, 1):g} hours"
    return f"{seconds // 60} minutes" if seconds >= 60 else f"{seconds} seconds"
