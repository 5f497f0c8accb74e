"""How askflow is doing over a period: questions, latency, what answers cost, cache hits, ratings and failures,
from the stored requests (``askflow stats`` and the admin page), and what contextual chunks cost, from their steps'
records (``askflow stats``)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from askflow.domain.model import Request, RequestStatus
from askflow.grading.privacy import private_findings
from askflow.insights.model import PRIVATE_QUESTION

if TYPE_CHECKING:  # the admin page reads these figures: it imports no ingestion
    from askflow.ingest.contextual import ContextRun


class Day(BaseModel):
    day: dt.date
    questions: int = 0
    cost_usd: float = 0.0


class Recent(BaseModel):
    """One request as the admin view lists it: enough to go from a bad answer to its trace."""

    request_id: str
    created_at: dt.datetime
    question: str  # masked when it holds private data
    status: str
    mode: str | None
    latency_ms: float | None
    cost_usd: float | None
    net_rating: int
    trace_id: str | None


class ContextualSpend(BaseModel):
    """What the contextual steps started in the period did and cost (``askflow.ingest.contextual``): ``runs``
    (DAG runs and evaluations; a DAG run's tasks are one), the chunks given a context, the calls, and the chunks
    left past a run's cap."""

    runs: int = 0
    contextualized: int = 0
    calls: int = 0
    left: int = 0
    cost_usd: float = 0.0


class UsageStats(BaseModel):
    period_start: dt.datetime
    period_end: dt.datetime
    questions: int
    answered: int
    failed: int
    unfinished: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_usd: float
    cost_per_answer_usd: float | None
    cache_hits: int
    cache_hit_share: float | None
    rated: int
    rated_up_share: float | None
    failures_by_reason: dict[str, int]
    days: list[Day]
    recent: list[Recent]
    contextual: ContextualSpend = ContextualSpend()


def usage_stats(requests: Iterable[Request], *, start: dt.datetime, end: dt.datetime, recent: int = 20,
                progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
                context_runs: Iterable[ContextRun] = ()) -> UsageStats:
    """Figures of the requests created in [start, end) (``requests``, oldest first), and of the contextual steps
    started in it (``context_runs``)."""
    days = [Day(day=start.date() + dt.timedelta(days=n)) for n in range((end.date() - start.date()).days + 1)]
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    seen = answered = failed = cache_hits = rated = rated_up = 0
    cost = 0.0
    last: list[Request] = []
    for request in requests:
        seen += 1
        if seen % 500 == 0:
            progress("scan", seen, 0)
        day = days[min(len(days) - 1, max(0, (request.created_at.date() - start.date()).days))]  # by UTC date
        day.questions += 1
        day.cost_usd += request.cost_usd or 0.0
        cost += request.cost_usd or 0.0
        if request.status is RequestStatus.COMPLETE:
            answered += 1
            cache_hits += request.mode == "cached"
            if request.completed_at is not None:
                latencies.append((request.completed_at - request.created_at).total_seconds() * 1000)
            if request.ratings:
                rated += 1
                rated_up += request.net_rating > 0
        elif request.status is RequestStatus.FAILED:
            failed += 1
            failures[request.error or "unknown"] += 1
        last = (last + [request])[-recent:]
    progress("scan", seen, seen)
    latencies.sort()
    return UsageStats(
        period_start=start, period_end=end, questions=seen, answered=answered, failed=failed,
        unfinished=seen - answered - failed, latency_p50_ms=_percentile(latencies, 50),
        latency_p95_ms=_percentile(latencies, 95), cost_usd=round(cost, 6),
        cost_per_answer_usd=round(cost / answered, 6) if answered else None, cache_hits=cache_hits,
        cache_hit_share=round(cache_hits / answered, 3) if answered else None, rated=rated,
        rated_up_share=round(rated_up / rated, 3) if rated else None, failures_by_reason=dict(failures.most_common()),
        days=[day.model_copy(update={"cost_usd": round(day.cost_usd, 6)}) for day in days],
        recent=[_recent(request) for request in reversed(last)], contextual=contextual_spend(context_runs))


def contextual_spend(runs: Iterable[ContextRun]) -> ContextualSpend:
    """What the contextual steps' records ``runs`` add up to."""
    runs = list(runs)
    return ContextualSpend(runs=len({run.run_id for run in runs}), contextualized=sum(r.contextualized for r in runs),
                           calls=sum(run.calls for run in runs), left=sum(run.left for run in runs),
                           cost_usd=round(sum(run.cost_usd for run in runs), 6))


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 1)


def _recent(request: Request) -> Recent:
    latency = ((request.completed_at - request.created_at).total_seconds() * 1000
               if request.completed_at is not None else None)
    return Recent(request_id=request.request_id, created_at=request.created_at,
                  question=PRIVATE_QUESTION if private_findings(request.question) else request.question[:200],
                  status=request.status.value, mode=request.mode,
                  latency_ms=None if latency is None else round(latency, 1), cost_usd=request.cost_usd,
                  net_rating=request.net_rating, trace_id=request.trace_id)
