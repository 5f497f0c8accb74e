"""Handlers of the ask path: plain functions taking a typed command and their dependencies."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from askflow.adapters.firestore_requests import utcnow
from askflow.config import Settings
from askflow.domain.errors import AskflowError, Conflict, InvalidInput, NotFound
from askflow.domain.model import RequestStatus
from askflow.ports import EventBus, RequestStore

log = logging.getLogger(__name__)


class AskQuestion(BaseModel):
    """``POST /requests`` body."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(min_length=1)
    thread_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


class RateAnswer(BaseModel):
    """``POST /requests/{id}/feedback`` body. ``rater`` identifies the person (a browser id, a Slack user id)."""

    model_config = ConfigDict(extra="forbid")

    positive: StrictBool
    comment: str | None = Field(default=None, max_length=2000)
    rater: str = Field(default="anonymous", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


FEED_PUBLIC_FIELDS = ("request_id", "question", "answer", "sources", "created_at", "mode")


def submit_question(
    command: AskQuestion, *, requests: RequestStore, events: EventBus, settings: Settings,
    request_id: str | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store and queue a question. A caller with its own idempotency key (Slack's event id) passes it as
    ``request_id``: a second submission then raises ``Duplicate`` and queues nothing."""
    if len(command.question) > settings.max_question_chars:
        raise InvalidInput(f"question: at most {settings.max_question_chars} characters")
    question = command.question.strip()
    if not question:
        raise InvalidInput("question: must not be blank")
    request_id = request_id or uuid.uuid4().hex
    now = utcnow()
    requests.create(
        request_id,
        {
            **(extra or {}),
            "request_id": request_id,
            "question": question,
            "thread_id": command.thread_id or request_id,
            "status": RequestStatus.PENDING.value,
            "created_at": now,
            "updated_at": now,
            "attempts": 0,
        },
    )
    try:
        events.publish(settings.questions_topic, {"request_id": request_id})
    except Exception as error:
        requests.finish(request_id, {"status": RequestStatus.FAILED.value, "error": "could not queue the question"})
        raise AskflowError("could not queue the question") from error
    return {"request_id": request_id, "status": RequestStatus.PENDING.value}


def get_request(request_id: str, *, requests: RequestStore, settings: Settings) -> dict[str, Any]:
    """The stored request; one still unanswered past the deadline is failed here, so none stays pending."""
    record = requests.get(request_id)
    if record is None:
        raise NotFound(f"no request {request_id}")
    if not RequestStatus(record["status"]).terminal and _past_deadline(record, utcnow(), settings):
        _fail_late(request_id, record["status"], requests=requests)
        record = requests.get(request_id) or record
    return record


def _past_deadline(record: dict[str, Any], now, settings: Settings) -> bool:
    return (now - record["created_at"]).total_seconds() > settings.request_deadline_s


def _fail_late(request_id: str, status: str, *, requests: RequestStore) -> bool:
    """Fail a request that outlived its deadline, unless it reached a terminal state meanwhile."""
    if not requests.finish(request_id, {"status": RequestStatus.FAILED.value, "error": "timed out"}):
        return False
    log.warning("request %s timed out in state %s", request_id, status)
    return True


def conversation_history(record: dict[str, Any], *, requests: RequestStore, slack=None) -> list[tuple[str, str]]:
    """What came before in the conversation: the Slack thread's earlier messages, or the earlier requests of the
    web thread."""
    slack_meta = record.get("slack")
    if slack_meta is not None:
        if slack is None or not slack_meta.get("in_thread"):
            return []
        return slack.thread_history(slack_meta["channel"], slack_meta["thread_ts"], before_ts=slack_meta["ts"])
    if record.get("thread_id") and record["thread_id"] != record.get("request_id"):
        return requests.thread_history(record["thread_id"], before=record["created_at"])
    return []


def answer_request(
    request_id: str, *, requests: RequestStore, answerer, settings: Settings, slack=None,
    published_at: dt.datetime | None = None,
) -> str:
    """Answer one queued request at most once; returns what happened (for logs and tests).

    ``published_at`` (when the queue accepted the message) and the time the worker received it are kept on the
    request, so queueing delay shows apart from the worker's own time.

    Safe under redelivery: the claim is an atomic write that refuses terminal requests and live leases; the final
    write refuses to overwrite a terminal state, and only the worker whose write lands replies in Slack.
    """
    received_at = utcnow()
    record = requests.claim(request_id, lease_s=settings.request_lease_s)
    if record is None:
        log.info("request %s: already answered or being answered; nothing to do", request_id)
        return "skipped"
    try:
        answer = answerer.answer(record["question"], conversation_history(record, requests=requests, slack=slack))
        fields = {"status": RequestStatus.COMPLETE.value, "completed_at": utcnow(), **answer.to_dict()}
    except AskflowError as error:
        log.warning("request %s failed: %s", request_id, error)
        fields = {"status": RequestStatus.FAILED.value, "error": str(error)}
    except Exception:
        log.exception("request %s failed unexpectedly", request_id)
        fields = {"status": RequestStatus.FAILED.value, "error": "internal error"}
    fields |= {"received_at": received_at, "published_at": published_at}
    if not requests.finish(request_id, fields):
        return "skipped"
    if slack is not None and record.get("slack"):
        slack.post_answer(record | fields)
    return fields["status"]


def requeue_unfinished(*, requests: RequestStore, events: EventBus, settings: Settings) -> dict[str, Any]:
    """The sweep that makes "every request ends in a terminal state" hold when a message is lost: a request left
    unfinished for ``requeue_after_s`` (its message dead-lettered, or gone with a restarted emulator) is queued
    again, and one past ``request_deadline_s`` is failed. Queuing twice is safe: the worker's claim answers once."""
    import datetime as dt

    now = utcnow()
    summary = {"requeued": 0, "timed_out": 0, "still_answering": 0}
    stale = requests.unfinished(updated_before=now - dt.timedelta(seconds=settings.requeue_after_s),
                                limit=settings.requeue_batch)
    for record in stale:
        request_id = record["request_id"]
        claimed_at = record.get("claimed_at")
        if _past_deadline(record, now, settings):
            summary["timed_out"] += _fail_late(request_id, record["status"], requests=requests)
        elif (record["status"] == RequestStatus.ANSWERING.value and claimed_at
              and (now - claimed_at).total_seconds() < settings.request_lease_s):
            summary["still_answering"] += 1  # a worker holds a live lease
        else:
            events.publish(settings.questions_topic, {"request_id": request_id})
            requests.update(request_id, {"updated_at": now, "requeued_at": now})
            summary["requeued"] += 1
    if stale:
        log.warning("requeue sweep: %s", summary)
    return summary


def rate_answer(request_id: str, command: RateAnswer, *, requests: RequestStore) -> dict[str, Any]:
    """One rating per request and rater: a later rating replaces the earlier one."""
    rating = {"positive": command.positive, "comment": command.comment, "at": utcnow()}
    record = requests.rate(request_id, command.rater, rating)
    if record is None:
        raise NotFound(f"no request {request_id}")
    if record.get("status") != RequestStatus.COMPLETE.value:
        raise Conflict(f"request {request_id} is {record.get('status')}: only answered requests can be rated")
    return {"request_id": request_id, "rater": command.rater, "positive": command.positive}


def recent_good_answers(*, requests: RequestStore, limit: int = 20) -> dict[str, Any]:
    """The homepage feed: recent requests graded good and public, only their public fields."""
    items = [{k: r.get(k) for k in FEED_PUBLIC_FIELDS} for r in requests.recent_good(limit)]
    return {"items": items}
