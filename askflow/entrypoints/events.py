"""CloudEvent handlers: the Pub/Sub-pushed answer worker and the Firestore trigger that queues grading.

Each event is parsed here, once, into a typed message or ``Request``; the service layer never sees a CloudEvent.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging

from pydantic import ValidationError

from askflow import tracing
from askflow.domain.errors import LeaseHeld
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import Request
from askflow.service_layer import handlers
from askflow.service_layer.evaluation import grading_due

log = logging.getLogger(__name__)


def question_message(cloud_event) -> QuestionQueued | None:
    """The message of a ``google.cloud.pubsub.topic.v1.messagePublished`` event, with the time Pub/Sub accepted it
    (``publishTime``); ``None`` if malformed."""
    try:
        message = cloud_event.data["message"]
        question = QuestionQueued.model_validate_json(base64.b64decode(message["data"]))
    except (KeyError, TypeError, ValueError, binascii.Error, ValidationError):
        return None
    return question.model_copy(update={"published_at": _publish_time(message)})


def _publish_time(message: dict) -> dt.datetime | None:
    from google.api_core.datetime_helpers import from_rfc3339

    try:
        return from_rfc3339(message["publishTime"])
    except (KeyError, TypeError, ValueError):
        return None


def on_question(cloud_event, components) -> str:
    """Answer the request a question message names."""
    message = question_message(cloud_event)
    if message is None:
        # A malformed message can never succeed: acknowledge it (by returning) instead of looping on it.
        log.error("dropping malformed question message %s", cloud_event["id"])
        return "dropped"
    attributes = (cloud_event.data.get("message") or {}).get("attributes") or {}
    try:
        with tracing.span("answer request", kind="consumer", parent=attributes, attributes={
                "askflow.request_id": message.request_id, "messaging.system": "gcp_pubsub",
                "messaging.operation.type": "process"}):
            return handlers.answer_request(message, requests=components.requests, answerer=components.answerer,
                                           settings=components.settings, slack=components.slack_replies,
                                           budgets=components.budgets, escalations=components.escalations)
    except LeaseHeld as error:  # not acknowledged: Pub/Sub delivers it again after its backoff
        log.info("%s; the message goes back to the queue", error)
        raise
    finally:
        tracing.flush()  # an instance may be frozen once the push is answered


def firestore_requests(cloud_event) -> tuple[Request | None, Request | None]:
    """(old, new) requests of a ``google.cloud.firestore.document.v1.written`` event.

    Eventarc sends the ``DocumentEventData`` protobuf; the emulator sends it base64-encoded.
    """
    from google.events.cloud.firestore import DocumentEventData

    from askflow.adapters.firestore_requests import from_document

    data = cloud_event.data
    if isinstance(data, str):
        data = data.encode()
    try:
        payload = DocumentEventData.deserialize(data)
    except Exception:  # protobuf's DecodeError and friends: the emulator's base64 form, then
        payload = DocumentEventData.deserialize(base64.b64decode(data))
    old = from_document(_fields(payload.old_value.fields)) if payload.old_value.name else None
    new = from_document(_fields(payload.value.fields)) if payload.value.name else None
    return old, new


def _fields(fields) -> dict:
    return {key: _value(value) for key, value in fields.items()}


def _value(value):
    from google.events.cloud.firestore import Value

    kind = Value.pb(value).WhichOneof("value_type")
    if kind == "map_value":
        return _fields(value.map_value.fields)
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "null_value" or kind is None:
        return None
    return getattr(value, kind)


def on_request_written(cloud_event, components) -> str:
    """Queue a grading event when a request completes or its ratings change; nothing for other writes."""
    old, new = firestore_requests(cloud_event)
    due = grading_due(old, new)
    if due is None:
        return "ignored"
    with tracing.span("queue grading", links=[new.traceparent] if new.traceparent else [],
                      attributes={"askflow.request_id": due.request_id}):
        components.events.publish(components.settings.evaluation_topic, due, request_id=due.request_id)
    tracing.flush()
    return "queued"
