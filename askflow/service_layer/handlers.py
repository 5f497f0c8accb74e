"""Handlers of the ask path: plain functions taking a typed command and their dependencies."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from askflow import faults, tracing
from askflow.config import Settings
from askflow.domain.audiences import ADMIN, PUBLIC, PUBLIC_VIEWER, Viewer
from askflow.domain.clock import utcnow
from askflow.domain.cost import PriceTable
from askflow.domain.errors import AskflowError, Conflict, Duplicate, Forbidden, InvalidInput, LeaseHeld, NotFound
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import (
    ASKER_RATER,
    Answer,
    Approval,
    Rating,
    Request,
    RequestStatus,
    SlackThread,
    Source,
    token_sha,
)
from askflow.ports import Budgets, Escalations, EventBus, RequestStore
from askflow.service_layer.commands import WHITESPACE, AskQuestion, RateAnswer

log = logging.getLogger(__name__)

FEED_PUBLIC_FIELDS = frozenset({"request_id", "question", "answer", "sources", "created_at", "mode", "verified_by",
                                "standalone_question"})
#: what ``GET /requests/{id}`` shows: the question, its answer and its times; never ratings, raters, comments,
#: grades, Slack users and channels, the asker's token or the worker's attempts
PUBLIC_FIELDS = frozenset({
    "request_id", "question", "thread_id", "status", "error", "answer", "partial_answer", "sources", "mode",
    "queries", "models", "tokens", "timings_ms", "context_turns", "fresh", "cached_from", "cache_similarity",
    "citations_removed", "created_at", "published_at", "received_at", "claimed_at", "completed_at", "verified",
    "verified_by", "in_review", "standalone_question", "cached_verified_by", "confidence", "not_sure"})
ASKER = ASKER_RATER
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")


class Answers(Protocol):
    """What answers a question (``answering.Answerer``)."""

    def answer(self, question: str, history: list[tuple[str, str]] = ..., *, fresh: bool = ...,
               on_partial: Callable[[str, list[Source]], None] | None = ..., viewer: Viewer = ...) -> Answer: ...

    def labels_of(self, doc_ids: Sequence[str]) -> dict[str, list[str] | None]: ...


class SlackThreads(Protocol):
    """The Slack side of a conversation (the Slack adapter's ``SlackReplies``)."""

    def thread_history(self, channel: str, thread_ts: str, *, before_ts: str) -> list[tuple[str, str]]: ...

    def start_reply(self, request: Request) -> str | None:
        """Reply in the thread at once, to be edited as the answer is written; its ``ts`` (``None``: not posted)."""

    def edit_reply(self, request: Request, text: str) -> None:
        """Show the answer so far in the reply ``start_reply`` posted (``request.slack.reply_ts``)."""

    def post_answer(self, request: Request) -> None:
        """The final reply: edits the posted one, or posts it."""


def submit_question(
    command: AskQuestion, *, requests: RequestStore, events: EventBus, settings: Settings,
    request_id: str | None = None, slack: SlackThread | None = None, asker_token: str | None = None,
    budgets: Budgets | None = None, identities: Sequence[str] = (), viewer: Viewer = PUBLIC_VIEWER,
    place_readers: Sequence[str] | None = None,
) -> tuple[Request, str | None]:
    """Store and queue a question; returns it with the asker's token (``None`` for Slack, whose threads Slack
    itself binds).

    ``viewer``: whom the answer will be shown to, and so what it may draw on: the asker's audiences (web, API, MCP:
    the answer is shown to them alone) or, for Slack, what everyone in the place it was asked may read. A question is
    "asked in public" when a web, API or MCP asker sees only what everyone may: only such questions may reach
    shared places (the homepage feed). ``place_readers``: who sees the place (Slack: the channel's readers); by
    default ``public`` for a question asked in public and no one but admins for any other (shown to its asker
    alone).

    A caller with its own idempotency key (Slack's event id) passes it as ``request_id``: a second
    submission then raises ``Duplicate`` before any budget is checked, and queues nothing.

    A web or API question is bound to its asker by a token: the caller's own (``asker_token``, 22-128 URL-safe
    characters, a browser keeps one), or a new one. A follow-up (``thread_id``) is accepted only with the token of
    whoever started the thread; otherwise the thread is "not found", and nothing of it reaches an answer.

    With ``budgets``, the question counts against the asker's (their token, or their Slack user) and ``identities``'
    budgets (the caller's address, say) and everyone's, before anything is stored: ``OverBudget`` past a limit. It
    is charged once per ``request_id``: submissions racing with one, or one after a submission that stopped between
    the charge and the store, share the first one's charge.
    """
    if len(command.question) > settings.max_question_chars:
        raise InvalidInput(f"question: at most {settings.max_question_chars} characters")
    question = command.question.strip(WHITESPACE)
    if not question:
        raise InvalidInput("question: must not be blank")
    if asker_token is not None and not _TOKEN.match(asker_token):
        raise InvalidInput("asker token: 22 to 128 letters, digits, '_' or '-'")
    if slack is None:
        asker_token = asker_token or secrets.token_urlsafe(24)
        if command.thread_id is not None:
            root = requests.get(command.thread_id)
            if root is None or not root.asked_by(asker_token):
                raise NotFound(f"no thread {command.thread_id} of this asker")
    if request_id is not None and requests.get(request_id) is not None:
        raise Duplicate(f"request {request_id} exists")
    key, request_id = request_id, request_id or uuid.uuid4().hex
    now = utcnow()
    asker = f"slack:{slack.user or slack.channel}" if slack is not None else f"asker:{token_sha(asker_token)[:32]}"
    counted = [asker, *identities]
    if budgets is not None:
        budgets.admit(counted, at=now, key=key)
    traceparent = tracing.traceparent()
    in_public = slack is None and viewer.is_public
    request = Request(request_id=request_id, question=question, thread_id=command.thread_id or request_id,
                      created_at=now, updated_at=now, slack=slack, fresh=command.fresh,
                      expires_at=now + dt.timedelta(days=settings.request_retention_days),
                      asker_sha=token_sha(asker_token) if asker_token else None,
                      budget_identities=counted if budgets is not None else [],
                      audiences=viewer.search_filter, asked_in_public=in_public,
                      place_readers=list(place_readers) if place_readers is not None else
                      ([PUBLIC] if in_public else []),
                      traceparent=traceparent, trace_id=tracing.trace_id(traceparent))
    requests.create(request)
    try:
        events.publish(settings.questions_topic, QuestionQueued(request_id=request_id))
    except Exception as error:
        requests.finish(request.failed("could not queue the question"))
        raise AskflowError("could not queue the question") from error
    return request, asker_token


def public_view(request: Request, fields: frozenset[str] = PUBLIC_FIELDS) -> dict[str, Any]:
    """What ``GET /requests/{id}`` (``fields``) shows of a request (its sources never say who may read them; its
    escalation its state and the team's answer, never a Slack user or channel)."""
    from askflow.service_layer.escalation import public_escalation

    view = request.model_dump(mode="json", exclude_none=True, include=fields)
    escalation = public_escalation(request) if fields is PUBLIC_FIELDS else None
    return view | ({"escalation": escalation} if escalation else {})


def get_request(request_id: str, *, requests: RequestStore, settings: Settings) -> Request:
    """The stored request; one still unanswered past the deadline is failed here, so none stays pending."""
    request = requests.get(request_id)
    if request is None:
        raise NotFound(f"no request {request_id}")
    if not request.terminal and request.past_deadline(utcnow(), settings.request_deadline_s):
        _fail_late(request, requests=requests)
        request = requests.get(request_id) or request
    return request


def _fail_late(request: Request, *, requests: RequestStore) -> bool:
    """Fail a request that outlived its deadline, unless it reached a terminal state meanwhile."""
    if not requests.finish(request.failed("timed out")):
        return False
    log.warning("request %s timed out in state %s", request.request_id, request.status.value)
    return True


def conversation_history(request: Request, *, requests: RequestStore,
                         slack: SlackThreads | None = None) -> list[tuple[str, str]]:
    """What came before in the conversation: the Slack thread's earlier messages, or the earlier requests of the
    web thread."""
    if request.slack is not None:
        if slack is None or not request.slack.in_thread:
            return []
        return slack.thread_history(request.slack.channel, request.slack.thread_ts, before_ts=request.slack.ts)
    if request.in_web_thread:
        return requests.thread_history(request.thread_id, before=request.created_at)
    return []


def answer_request(
    message: QuestionQueued, *, requests: RequestStore, answerer: Answers, settings: Settings,
    slack: SlackThreads | None = None, budgets: Budgets | None = None, escalations: Escalations | None = None,
) -> str:
    """Answer one queued request at most once; returns what happened (for logs and tests).

    The time the queue accepted the message and the time the worker received it are kept on the request, so
    queueing delay shows apart from the worker's own time.

    Safe under redelivery: the claim is an atomic write that refuses terminal requests and live leases (a message
    for a request another worker is answering raises ``LeaseHeld``: not acknowledged, it comes back, and is
    answered if that worker dies); the final write refuses to overwrite a terminal state, and only the worker
    whose write lands replies in Slack. An answer askflow is not sure of (``Request.not_sure``) is handed to the
    team in its delivery (``escalation.escalate``), before the Slack reply, which then says so.
    """
    received_at = utcnow()
    with tracing.span("claim", attributes={"askflow.request_id": message.request_id}):
        request = requests.claim(message.request_id, lease_s=settings.request_lease_s)
    if request is None:
        stored = requests.get(message.request_id)
        if stored is not None and not stored.terminal:
            # another worker is answering (or its lease ran out just after the claim read it): the message goes back
            # to the queue, so that it is answered even if that worker died (its heartbeats stop, its lease runs
            # out, a redelivery claims the request). Never acknowledged as done while the request is not.
            raise LeaseHeld(f"request {message.request_id} is being answered by another worker")
        if stored is not None and _deliver_left(stored, requests=requests, slack=slack, budgets=budgets,
                                                settings=settings, escalations=escalations):
            return "delivered"
        if stored is not None and stored.terminal and stored.delivered_at is None and _follows_up(stored):
            # another worker took its delivery and may have died doing it: come back when that lease runs out
            raise LeaseHeld(f"request {message.request_id} is being delivered by another worker")
        log.info("request %s: already answered; nothing to do", message.request_id)
        return "skipped"
    faults.kill_point("worker.after_claim")
    partial = None
    try:
        with _heartbeats(requests, request, every_s=settings.request_lease_s / 3):
            request = _start_slack_reply(request, requests=requests, slack=slack)
            partial = PartialAnswers(request, requests=requests, slack=slack, settings=settings)
            answer = answerer.answer(request.question,
                                     conversation_history(request, requests=requests, slack=slack),
                                     fresh=request.fresh, on_partial=partial, viewer=request_viewer(request))
        faults.kill_point("worker.after_answer")
        prices = PriceTable(settings.model_prices)
        earlier = (requests.thread_readers(request.thread_id, before=request.created_at)
                   if request.slack is None and request.in_web_thread and answer.context_turns else [])
        outcome = request.completed(answer, at=utcnow(), history_readers=earlier,
                                    cost_usd=round(prices.cost([*answer.usage, *answer.embedding_usage])
                                                   + answer.rerank_usd, 6))
    except AskflowError as error:
        log.warning("request %s failed: %s", request.request_id, error)
        outcome = request.failed(str(error))
    except Exception:
        log.exception("request %s failed unexpectedly", request.request_id)
        outcome = request.failed("internal error")
    outcome = outcome.model_copy(update={"received_at": received_at, "published_at": message.published_at,
                                         "partial_writes": partial.writes if partial else 0})
    with tracing.span("write answer", attributes={"askflow.status": outcome.status.value,
                                                  "askflow.cost_usd": outcome.cost_usd}):
        written = requests.finish(outcome)
    if not written:
        log.warning("request %s: no longer this worker's (another attempt answered it, or it timed out); its outcome "
                    "is dropped", request.request_id)
        stored = requests.get(request.request_id)  # a request failed as timed out still gets its Slack reply
        _deliver_left(stored, requests=requests, slack=slack, budgets=budgets, settings=settings,
                      escalations=escalations)
        return "skipped"
    faults.kill_point("worker.after_finish")
    _relabelled_meanwhile(outcome, requests=requests, answerer=answerer)
    if _follows_up(outcome) and requests.claim_delivery(outcome.request_id, lease_s=settings.request_lease_s):
        _deliver(outcome, requests=requests, slack=slack, budgets=budgets, escalations=escalations,
                 settings=settings)
    return outcome.status.value


def _relabelled_meanwhile(outcome: Request, *, requests: RequestStore, answerer: Answers) -> None:
    """A relabelling that ran while this answer was written passed it by (it was not finished): if the documents it
    drew on are labelled otherwise now than its search found them, its readers follow (``RequestStore.relabel``),
    so a page made internal meanwhile takes the new answer out of the feed too."""
    if outcome.status is not RequestStatus.COMPLETE or not outcome.sources or outcome.cached_from:
        return
    searched = {source.doc_id: source.audiences for source in outcome.sources}
    now = answerer.labels_of(sorted(searched))
    if any(sorted(now.get(doc_id) or []) != sorted(labels or []) for doc_id, labels in searched.items()):
        requests.relabel(outcome.request_id, now)


def _deliver_left(stored: Request | None, *, requests: RequestStore, slack: SlackThreads | None,
                  budgets: Budgets | None, settings: Settings, escalations: Escalations | None = None) -> bool:
    """Do the delivery a terminal request is still owed (its worker died before it, or it timed out under a worker
    whose write was refused), if no other worker is doing it; returns whether this one did."""
    if stored is None or not stored.terminal or stored.delivered_at is not None or not _follows_up(stored):
        return False
    if not requests.claim_delivery(stored.request_id, lease_s=settings.request_lease_s):
        return False
    log.info("request %s: %s; its delivery was not done, doing it now", stored.request_id, stored.status.value)
    _deliver(stored, requests=requests, slack=slack, budgets=budgets, escalations=escalations, settings=settings)
    return True


def request_viewer(request: Request) -> Viewer:
    """Whom a request's answer is shown to, as the request recorded it when it was asked."""
    return ADMIN if request.audiences is None else Viewer.of(request.audiences)


def _follows_up(request: Request) -> bool:
    """Whether a terminal request has a delivery to do after its final write: a Slack reply, a cost to count, or a
    question askflow is not sure of to hand to the team."""
    return request.slack is not None or bool(request.cost_usd and request.budget_identities) or \
        bool(request.not_sure and request.status is RequestStatus.COMPLETE)


def _deliver(request: Request, *, requests: RequestStore, slack: SlackThreads | None,
             budgets: Budgets | None, escalations: Escalations | None = None,
             settings: Settings | None = None) -> None:
    """What follows a request's final write, by the one worker that claimed the delivery, then noted as done
    (``delivered_at``). A worker that dies in between leaves it to the next delivery of the message once its delivery
    lease runs out: the cost is counted once per request id (``Budgets.spend``) and the Slack reply edits the message
    posted at the start (only when none was posted, a death between the post and the note posts it twice)."""
    if budgets is not None and request.cost_usd and request.budget_identities:
        try:
            budgets.spend(request.budget_identities, request.cost_usd, at=request.created_at, key=request.request_id)
        except Exception as error:  # the answer is stored: a missed count is logged, never a redelivery
            log.warning("request %s: its cost was not counted against its budgets: %s", request.request_id, error)
    if request.not_sure and request.status is RequestStatus.COMPLETE and settings is not None:
        from askflow.service_layer.escalation import escalate

        try:
            escalated = escalate(request, why=request.not_sure, requests=requests, escalations=escalations,
                                 budgets=budgets, settings=settings)
            request = request.model_copy(update={"escalation": escalated})
        except Exception as error:  # the delivery stays undone: the message comes back and escalates it then
            log.warning("request %s: could not hand it to the team (the delivery is tried again): %s",
                        request.request_id, error)
            raise
    faults.kill_point("worker.after_escalate")
    if slack is not None and request.slack is not None:
        slack.post_answer(request)
    faults.kill_point("worker.after_post")
    requests.delivered(request.request_id, at=utcnow())


def _start_slack_reply(request: Request, *, requests: RequestStore, slack: SlackThreads | None) -> Request:
    """A Slack question gets its reply at once (an earlier attempt's, when it posted one), kept on the request so that
    a retry edits the same message."""
    if slack is None or request.slack is None or request.slack.reply_ts:
        return request
    reply_ts = slack.start_reply(request)
    if reply_ts is None:
        return request
    replied = request.replied_in_slack(reply_ts)
    requests.reply_started(replied)
    return replied


class PartialAnswers:
    """Where the answer goes while it is written: the request (at most every ``partial_write_interval_s``, so a
    thousand tokens cost a handful of writes) and the Slack reply (at most every ``slack_edit_interval_s``). The first
    text is written at once. Once the store refuses a write (this worker's claim was lost) nothing more is written.
    The final answer is the worker's last write, whatever was written before."""

    def __init__(self, request: Request, *, requests: RequestStore, slack: SlackThreads | None, settings: Settings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._request = request
        self._requests = requests
        self._slack = slack if request.slack is not None and request.slack.reply_ts else None
        self._settings = settings
        self._clock = clock
        self._written_at = self._edited_at = float("-inf")
        self.writes = 0
        self.claim_lost = False

    def __call__(self, text: str, sources: Sequence[Source]) -> None:
        if self.claim_lost or not text:
            return
        now = self._clock()
        if now - self._written_at >= self._settings.partial_write_interval_s:
            self._written_at = now
            if not self._requests.progress(self._request.answering(text, sources)):
                self.claim_lost = True
                log.warning("request %s: no longer this worker's; its partial answer is not written",
                            self._request.request_id)
                return
            self.writes += 1
            faults.kill_point("worker.after_partial")
        if self._slack is not None and now - self._edited_at >= self._settings.slack_edit_interval_s:
            self._edited_at = now
            self._slack.edit_reply(self._request, text)


@contextlib.contextmanager
def _heartbeats(requests: RequestStore, request: Request, *, every_s: float):
    """While the block runs, tell the store every ``every_s`` that this worker is alive (its lease holds). A beat the
    store refuses (the claim was lost) is the last one."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                if not requests.heartbeat(request, at=utcnow()):
                    log.warning("request %s: no longer this worker's claim; heartbeats stop", request.request_id)
                    return
            except Exception as error:  # a missed beat shortens the lease; the answer goes on
                log.warning("request %s: heartbeat failed: %s", request.request_id, error)

    beating = threading.Thread(target=beat, name=f"heartbeat-{request.request_id}", daemon=True)
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join(timeout=5)


def requeue_unfinished(*, requests: RequestStore, events: EventBus, settings: Settings) -> dict[str, Any]:
    """The sweep that makes "every request ends in a terminal state" hold when a message is lost: a request left
    unfinished for ``requeue_after_s`` (its message dead-lettered, or gone with a restarted emulator) is queued
    again, and one past ``request_deadline_s`` is failed. Queuing twice is safe: the worker's claim answers once."""
    now = utcnow()
    summary = {"requeued": 0, "timed_out": 0, "still_answering": 0}
    stale = requests.unfinished(updated_before=now - dt.timedelta(seconds=settings.requeue_after_s),
                                limit=settings.requeue_batch)
    for request in stale:
        if request.past_deadline(now, settings.request_deadline_s):
            failed = _fail_late(request, requests=requests)
            summary["timed_out"] += failed
            if failed and request.slack is not None:  # a worker delivers its failure to its thread
                events.publish(settings.questions_topic, QuestionQueued(request_id=request.request_id))
        elif request.lease_held(now, settings.request_lease_s):
            summary["still_answering"] += 1
        else:
            events.publish(settings.questions_topic, QuestionQueued(request_id=request.request_id))
            requests.mark_requeued(request.request_id, at=now)
            summary["requeued"] += 1
    if stale:
        log.warning("requeue sweep: %s", summary)
    return summary


def rate_answer(request_id: str, command: RateAnswer, *, requests: RequestStore, rater: str) -> dict[str, Any]:
    """One rating per request and rater, the rater derived by the caller's edge (a Slack user id): a later rating
    replaces the earlier one."""
    rating = Rating(positive=command.positive, comment=command.comment, at=utcnow())
    request = requests.rate(request_id, rater, rating)
    if request is None:
        raise NotFound(f"no request {request_id}")
    if request.status is not RequestStatus.COMPLETE:
        raise Conflict(f"request {request_id} is {request.status.value}: only answered requests can be rated")
    return {"request_id": request_id, "positive": command.positive}


def rate_as_asker(request_id: str, command: RateAnswer, *, requests: RequestStore,
                  asker_token: str | None) -> dict[str, Any]:
    """A web or API rating: only whoever asked may rate, once (a later rating replaces theirs), so no number of
    made-up raters can move a grade."""
    request = requests.get(request_id)
    if request is None:
        raise NotFound(f"no request {request_id}")
    if not request.asked_by(asker_token):
        raise Forbidden("only whoever asked may rate an answer (send the asker token as X-Asker-Token)")
    return rate_answer(request_id, command, requests=requests, rater=ASKER)


def recent_good_answers(*, requests: RequestStore, limit: int = 20) -> list[Request]:
    """The homepage feed, a shared place: recent verified answers (``learning.trust``), asked in public and answered
    only from what everyone may read (the caller shows only ``FEED_PUBLIC_FIELDS``)."""
    return [request for request in requests.recent_good(limit)  # the query's filters, checked again
            if request.is_public and request.verified and not request.team_internal]


def review_answer(request_id: str, *, approved: bool, reviewer: str, via: str,
                  requests: RequestStore) -> Request:
    """A reviewer's decision on an answer (the caller checked that they are one), kept on the request and in the
    audit log. The grading run its new revision brings makes an approved answer verified (``learning.trust``) and
    takes a turned-down one out of the cache and the sources."""
    request = requests.approve(request_id, Approval(by=reviewer, at=utcnow(), via=via, approved=approved))
    if request is None:
        raise NotFound(f"no request {request_id}")
    if request.status is not RequestStatus.COMPLETE:
        raise Conflict(f"request {request_id} is {request.status.value}: only answers can be reviewed")
    log.info("request %s %s by reviewer %s (%s)", request_id, "approved" if approved else "turned down", reviewer,
             via)
    return request
