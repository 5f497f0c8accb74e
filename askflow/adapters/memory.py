"""In-memory adapters: requests and run summaries held by one process, for evaluations that must not touch the
deployment's records (``askflow eval feedback``) and for fast tests. They keep the ports' promises (a claim refuses
a live lease, a finish refuses a terminal state) by the ``Request``'s own rules."""

from __future__ import annotations

import threading

from askflow.domain.budgets import TOTAL, BudgetLimits, Spent
from askflow.domain.clock import utcnow
from askflow.domain.errors import Duplicate
from askflow.domain.model import EvaluationRun, Graded, Rating, Request, RequestStatus
from askflow.ports import Budgets, EvaluationRuns, RequestStore


class InMemoryRequestStore(RequestStore):
    """Requests in a dict, for one process: an evaluation's questions, the handlers' unit tests."""

    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}

    def create(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise Duplicate(f"request {request.request_id} exists")
        self.requests[request.request_id] = request

    def get(self, request_id: str) -> Request | None:
        return self.requests.get(request_id)

    def claim(self, request_id: str, *, lease_s: float) -> Request | None:
        request, now = self.requests.get(request_id), utcnow()
        if request is None or not request.claimable(now, lease_s):
            return None
        self.requests[request_id] = request.claimed(now)
        return self.requests[request_id]

    def progress(self, request: Request) -> bool:
        stored = self.requests.get(request.request_id)
        if stored is None or stored.status is not RequestStatus.ANSWERING or stored.attempts != request.attempts:
            return False
        progress = {field: getattr(request, field) for field in Request.PROGRESS_FIELDS}
        self.requests[request.request_id] = stored.model_copy(update=progress)
        return True

    def finish(self, request: Request) -> bool:
        stored = self.requests.get(request.request_id)
        if stored is None or stored.terminal:
            return False
        outcome = {field: getattr(request, field) for field in Request.OUTCOME_FIELDS}
        self.requests[request.request_id] = stored.model_copy(update=outcome | {"updated_at": utcnow()})
        return True

    def unfinished(self, *, updated_before, limit: int) -> list[Request]:
        def changed(request: Request):
            return request.updated_at or request.created_at

        waiting = [r for r in self.requests.values() if not r.terminal and changed(r) < updated_before]
        return sorted(waiting, key=changed)[:limit]

    def thread_history(self, thread_id: str, *, before, limit: int = 4) -> list[tuple[str, str]]:
        turns = sorted((r for r in self.requests.values() if r.thread_id == thread_id and r.created_at < before
                        and r.status is RequestStatus.COMPLETE), key=lambda r: r.created_at)
        return [(r.question, r.answer or "") for r in turns[-limit:]]

    def heartbeat(self, request_id: str, *, at) -> None:
        self.requests[request_id] = self.requests[request_id].model_copy(update={"heartbeat_at": at})

    def mark_requeued(self, request_id: str, *, at) -> None:
        self.requests[request_id] = self.requests[request_id].model_copy(update={"updated_at": at, "requeued_at": at})

    def save_grade(self, request_id: str, graded: Graded) -> None:
        self.requests[request_id] = self.requests[request_id].model_copy(update=dict(graded))

    def rate(self, request_id: str, rater: str, rating: Rating) -> Request | None:
        request = self.requests.get(request_id)
        if request is not None and request.status is RequestStatus.COMPLETE:
            request = request.model_copy(update={"ratings": request.ratings | {rater: rating}, "rated_at": rating.at})
            self.requests[request_id] = request
        return request

    def recent_good(self, limit: int) -> list[Request]:
        good = [r for r in self.requests.values() if r.is_good]
        return sorted(good, key=lambda r: r.created_at, reverse=True)[:limit]

    def created_between(self, start, end, *, page_size: int = 500):
        yield from sorted((r for r in self.requests.values() if start <= r.created_at < end),
                          key=lambda r: r.created_at)


class InMemoryEvaluationRuns(EvaluationRuns):
    def __init__(self) -> None:
        self.runs: list[EvaluationRun] = []

    def save(self, run: EvaluationRun) -> None:
        self.runs.append(run)


class InMemoryBudgets(Budgets):
    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        self.spent: dict[tuple[int, str], Spent] = {}
        self._lock = threading.Lock()

    def admit(self, identities, *, at) -> None:
        window = self.limits.window(at)[0]
        keys = [*dict.fromkeys(identities), TOTAL]
        with self._lock:
            self.limits.check({key: self.spent.get((window, key), Spent()) for key in keys}, at=at)
            for key in keys:
                counters = self.spent.setdefault((window, key), Spent())
                counters.questions += 1

    def spend(self, identities, usd: float, *, at) -> None:
        window = self.limits.window(at)[0]
        with self._lock:
            for key in [*dict.fromkeys(identities), TOTAL]:
                self.spent.setdefault((window, key), Spent()).usd += usd
