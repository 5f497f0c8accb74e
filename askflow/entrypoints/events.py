"""CloudEvent handlers: the Pub/Sub-triggered answer worker."""

from __future__ import annotations

import base64
import binascii
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
        request_id, requests=components.requests, answerer=components.answerer, settings=components.settings
    )
