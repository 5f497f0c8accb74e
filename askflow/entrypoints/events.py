"""CloudEvent handlers: the Pub/Sub-triggered answer worker."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging

from askflow.service_layer import handlers

log = logging.getLogger(__name__)


def pubsub_payload(cloud_event) -> dict | None:
    """The JSON payload of a ``google.cloud.pubsub.topic.v1.messagePublished`` event; ``None`` if malformed."""
    try:
        data = cloud_event.data["message"]["data"]
        payload = json.loads(base64.b64decode(data))
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def on_question(cloud_event, components) -> str:
    payload = pubsub_payload(cloud_event)
    request_id = payload.get("request_id") if payload else None
    if not isinstance(request_id, str) or not request_id:
        # A malformed message can never succeed: acknowledge it (by returning) instead of looping on it.
        log.error("dropping malformed question message %s", cloud_event["id"])
        return "dropped"
    return handlers.answer_request(
        request_id, requests=components.requests, answerer=components.answerer, settings=components.settings,
        slack=components.slack_replies, published_at=publish_time(cloud_event),
    )


def publish_time(cloud_event) -> dt.datetime | None:
    """When Pub/Sub accepted the message (its ``publishTime``), so the request shows how long delivery took."""
    from google.api_core.datetime_helpers import from_rfc3339

    try:
        return from_rfc3339(cloud_event.data["message"]["publishTime"])
    except (KeyError, TypeError, ValueError):
        return None


def firestore_documents(cloud_event) -> tuple[dict | None, dict | None]:
    """(old, new) documents of a ``google.cloud.firestore.document.v1.written`` event, as plain dicts.

    Eventarc sends the ``DocumentEventData`` protobuf; the emulator sends it base64-encoded.
    """
    from google.events.cloud.firestore import DocumentEventData

    data = cloud_event.data
    if isinstance(data, str):
        data = data.encode()
    try:
        payload = DocumentEventData.deserialize(data)
    except Exception:  # noqa: BLE001 - protobuf raises several types; retry as base64 once
        payload = DocumentEventData.deserialize(base64.b64decode(data))
    old = _fields(payload.old_value.fields) if payload.old_value.name else None
    new = _fields(payload.value.fields) if payload.value.name else None
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
    """Queue an evaluation event when a request completes or its ratings change; nothing for other writes."""
    from askflow.service_layer.evaluation import evaluation_event

    request_id = cloud_event["subject"].rsplit("/", 1)[-1]
    old, new = firestore_documents(cloud_event)
    event = evaluation_event(old, new, request_id)
    if event is None:
        return "ignored"
    components.events.publish(components.settings.evaluation_topic, event, request_id=request_id)
    return "queued"
