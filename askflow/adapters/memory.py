"""In-memory adapters: requests and run summaries held by one process, for evaluations that must not touch the
deployment's records (``askflow eval feedback``) and for fast tests. They keep the ports' promises (a claim refuses
a live lease, a finish refuses a terminal state) by the ``Request``'s own rules."""

from __future__ import annotations

import threading

from askflow.domain.budgets import TOTAL, BudgetLimits, Spent
from askflow.domain.clock import utcnow
from askflow.domain.errors import Duplicate
from askflow.domain.model import (
    Approval,
    AuditEntry,
    Escalation,
    EvaluationRun,
    Graded,
    Rating,
    Request,
    RequestStatus,
    TeamAnswer,
)
from askflow.ports import Budgets, EvaluationRuns, RequestStore


class InMemoryRequestStore(RequestStore):
    """Requests in a dict, for one process: an evaluation's questions, the handlers' unit tests."""

    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}
        self.audit: dict[str, AuditEntry] = {}
        self._lock = threading.Lock()  # a worker's heartbeats come from another thread

    def create(self, request: Request) -> None:
        with self._lock:
            if request.request_id in self.requests:
                raise Duplicate(f"request {request.request_id} exists")
            self.requests[request.request_id] = request

    def get(self, request_id: str) -> Request | None:
        return self.requests.get(request_id)

    def claim(self, request_id: str, *, lease_s: float) -> Request | None:
        with self._lock:
            request, now = self.requests.get(request_id), utcnow()
            if request is None or not request.claimable(now, lease_s):
                return None
            self.requests[request_id] = request.claimed(now)
            return self.requests[request_id]

    def _update_if(self, request: Request, changes: dict, *, holds) -> bool:
        """Apply ``changes`` to the stored request if it ``holds`` (the same rules as the Firestore adapter's)."""
        with self._lock:
            stored = self.requests.get(request.request_id)
            if stored is None or not holds(stored):
                return False
            self.requests[request.request_id] = stored.model_copy(update=changes)
            return True

    def heartbeat(self, request: Request, *, at) -> bool:
        return self._update_if(request, {"heartbeat_at": at}, holds=lambda stored: stored.held_by(request))

    def reply_started(self, request: Request) -> bool:
        return self._update_if(request, {"slack": request.slack}, holds=lambda stored: stored.held_by(request))

    def progress(self, request: Request) -> bool:
        progress = {field: getattr(request, field) for field in Request.PROGRESS_FIELDS}
        return self._update_if(request, progress, holds=lambda stored: stored.held_by(request))

    def finish(self, request: Request) -> bool:
        outcome = {field: getattr(request, field) for field in Request.OUTCOME_FIELDS}
        return self._update_if(request, outcome | {"updated_at": utcnow()},
                               holds=lambda stored: stored.accepts_outcome(request))

    def claim_delivery(self, request_id: str, *, lease_s: float) -> bool:
        with self._lock:
            stored, now = self.requests.get(request_id), utcnow()
            if stored is None or not stored.delivery_claimable(now, lease_s):
                return False
            self.requests[request_id] = stored.model_copy(update={"delivering_at": now})
            return True

    def delivered(self, request_id: str, *, at) -> None:
        with self._lock:
            self.requests[request_id] = self.requests[request_id].model_copy(update={"delivered_at": at})

    def unfinished(self, *, updated_before, limit: int) -> list[Request]:
        def changed(request: Request):
            return request.updated_at or request.created_at

        waiting = [r for r in self.requests.values() if not r.terminal and changed(r) < updated_before]
        return sorted(waiting, key=changed)[:limit]

    def thread_history(self, thread_id: str, *, before, limit: int = 4) -> list[tuple[str, str]]:
        return [(r.question, r.answer or "") for r in self._thread(thread_id, before=before, limit=limit)]

    def thread_readers(self, thread_id: str, *, before, limit: int = 4) -> list[list[str] | None]:
        return [r.readers for r in self._thread(thread_id, before=before, limit=limit)]

    def _thread(self, thread_id: str, *, before, limit: int) -> list[Request]:
        """The Firestore adapter's query: the thread's last ``limit`` requests before ``before``, the completed ones
        of them, oldest first."""
        turns = sorted((r for r in self.requests.values() if r.thread_id == thread_id and r.created_at < before),
                       key=lambda r: r.created_at)[-limit:]
        return [r for r in turns if r.status is RequestStatus.COMPLETE]

    def mark_requeued(self, request_id: str, *, at) -> None:
        self.requests[request_id] = self.requests[request_id].model_copy(update={"updated_at": at, "requeued_at": at})

    def save_grade(self, request_id: str, graded: Graded) -> bool:
        with self._lock:
            request = self.requests.get(request_id)
            if request is None or request.revision() != graded.graded_revision:
                return False
            self.requests[request_id] = request.model_copy(update=dict(graded))
            return True

    def rate(self, request_id: str, rater: str, rating: Rating) -> Request | None:
        request = self.requests.get(request_id)
        if request is not None and request.status is RequestStatus.COMPLETE:
            request = request.model_copy(update={"ratings": request.ratings | {rater: rating}, "rated_at": rating.at})
            self.requests[request_id] = request
        return request

    def recent_good(self, limit: int) -> list[Request]:
        good = [r for r in self.requests.values() if r.verified and r.in_feed]
        return sorted(good, key=lambda r: r.created_at, reverse=True)[:limit]

    def review_queue(self, limit: int) -> list[Request]:
        waiting = [r for r in self.requests.values() if r.in_review]
        return sorted(waiting, key=lambda r: r.created_at, reverse=True)[:limit]

    def approve(self, request_id: str, approval: Approval) -> Request | None:
        request = self.requests.get(request_id)
        if request is not None and request.status is RequestStatus.COMPLETE:
            request = request.model_copy(update={"approval": approval})
            self.requests[request_id] = request
            entry = AuditEntry.of(request_id, approval)
            self.audit[entry.entry_id] = entry
        return request

    def audit_log(self, limit: int) -> list[AuditEntry]:
        return sorted(self.audit.values(), key=lambda e: e.at, reverse=True)[:limit]

    def escalate(self, request_id: str, escalation: Escalation, *, replacing: Escalation | None = None) -> bool:
        with self._lock:
            request = self.requests.get(request_id)
            if request is None or not request.terminal or not Escalation.settable(request.escalation, replacing):
                return False
            self.requests[request_id] = request.model_copy(update={"escalation": escalation})
            return True

    def settle_escalation(self, request_id: str, escalation: Escalation) -> bool:
        with self._lock:
            request = self.requests.get(request_id)
            if request is None or request.escalation is None or request.escalation.state != "posting":
                return False
            self.requests[request_id] = request.model_copy(update={"escalation": escalation})
            return True

    def claim_escalation_delivery(self, request_id: str, *, lease_s: float) -> bool:
        with self._lock:
            request, now = self.requests.get(request_id), utcnow()
            if request is None or request.escalation is None or \
                    not request.escalation.delivery_claimable(now, lease_s):
                return False
            self.requests[request_id] = request.model_copy(update={"escalation": request.escalation.model_copy(
                update={"delivering_at": now})})
            return True

    def answer_escalation(self, request_id: str, answer: TeamAnswer) -> Request | None:
        with self._lock:
            request = self.requests.get(request_id)
            if request is None or request.escalation is None or request.escalation.answer is not None:
                return request
            request = request.model_copy(update={"escalation": request.escalation.model_copy(
                update={"state": "answered", "answer": answer})})
            self.requests[request_id] = request
            return request

    def mark_team_answer_internal(self, request_id: str, reply_ts: str, audience: str) -> Request | None:
        with self._lock:
            request = self.requests.get(request_id)
            team = request.team_answer if request is not None else None
            if team is None or team.ts != reply_ts or team.internal is not None:
                return request
            request = request.model_copy(update={"in_feed": False, "escalation": request.escalation.model_copy(
                update={"answer": team.model_copy(update={"internal": audience})})})
            self.requests[request_id] = request
            return request

    def relabel(self, request_id: str, labels) -> bool:
        with self._lock:
            request = self.requests.get(request_id)
            if request is None or not request.terminal:
                return False
            relabelled = request.with_readers(request.relabelled(labels))
            if (relabelled.readers, relabelled.in_feed) == (request.readers, request.in_feed):
                return False
            self.requests[request_id] = relabelled
            return True

    def escalation_delivered(self, request_id: str, *, at) -> None:
        with self._lock:
            request = self.requests[request_id]
            self.requests[request_id] = request.model_copy(update={"escalation": request.escalation.model_copy(
                update={"delivered_at": at})})

    def escalated_in(self, thread: str) -> Request | None:
        return next((r for r in self.requests.values() if r.escalation and r.escalation.thread == thread), None)

    def open_escalations(self, question_key: str) -> list[Request]:
        return [r for r in self.requests.values() if r.escalation and r.escalation.state == "open"
                and r.escalation.question_key == question_key]

    def joined_to(self, request_id: str) -> list[Request]:
        return [r for r in self.requests.values() if r.escalation and r.escalation.joined == request_id]

    def escalations(self, limit: int) -> list[Request]:
        escalated = [r for r in self.requests.values() if r.escalation is not None]
        return sorted(escalated, key=lambda r: r.escalation.asked_at, reverse=True)[:limit]

    def created_between(self, start, end, *, page_size: int = 500):
        yield from sorted((r for r in self.requests.values() if start <= r.created_at < end),
                          key=lambda r: r.created_at)

    def citing(self, doc_id: str, *, limit: int = 500) -> list[Request]:
        cited = [r for r in self.requests.values() if doc_id in r.cited_docs]
        return sorted(cited, key=lambda r: r.created_at, reverse=True)[:limit]

    def cached_copies(self, request_id: str, *, limit: int = 500) -> list[Request]:
        return [r for r in self.requests.values() if r.cached_from == request_id][:limit]

    def delete(self, request_id: str) -> bool:
        with self._lock:
            return self.requests.pop(request_id, None) is not None


class InMemoryEvaluationRuns(EvaluationRuns):
    def __init__(self) -> None:
        self.runs: list[EvaluationRun] = []

    def save(self, run: EvaluationRun) -> None:
        self.runs.append(run)


class InMemoryBudgets(Budgets):
    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        self.spent: dict[tuple[int, str], Spent] = {}
        self.spent_keys: set[tuple[int, str]] = set()  # (window, request id) whose cost was counted
        self.charged: set[tuple[int, str, str, str]] = set()  # (window, identity, kind, key) counted under a limit
        self._lock = threading.Lock()

    def admit(self, identities, *, at, key: str | None = None, kind: str = "questions") -> None:
        """The Firestore adapter's rules: a key counted on a limited counter is neither checked nor counted there
        again."""
        window = self.limits.window(at)[0]
        with self._lock:
            counted = [identity for identity in [*dict.fromkeys(identities), TOTAL]
                       if (window, identity, kind, key) not in self.charged]
            self.limits.check({identity: self.spent.get((window, identity), Spent()) for identity in counted}, at=at,
                              kind=kind)
            for identity in counted:
                counters = self.spent.setdefault((window, identity), Spent())
                setattr(counters, kind, getattr(counters, kind) + 1)
                if key is not None and self.limits.limit(identity, kind) is not None:
                    self.charged.add((window, identity, kind, key))

    def spend(self, identities, usd: float, *, at, key: str | None = None) -> None:
        window = self.limits.window(at)[0]
        with self._lock:
            if key is not None:
                if (window, key) in self.spent_keys:
                    return
                self.spent_keys.add((window, key))
            for identity in [*dict.fromkeys(identities), TOTAL]:
                self.spent.setdefault((window, identity), Spent()).usd += usd
