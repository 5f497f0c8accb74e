"""PubSubEventBus: messages as JSON on Pub/Sub topics named by settings."""

from __future__ import annotations

from typing import Any

from askflow import tracing
from askflow.domain.messages import Message
from askflow.ports import EventBus


class PubSubEventBus(EventBus):
    def __init__(self, *, publisher: Any, project_id: str, timeout_s: float = 30.0) -> None:
        self._publisher = publisher
        self._project_id = project_id
        self._timeout_s = timeout_s

    def publish(self, topic: str, message: Message, **attributes: str) -> str:
        """The trace context goes along in the attributes (``traceparent``): the subscriber's span continues it."""
        path = self._publisher.topic_path(self._project_id, topic)
        with tracing.span(f"{topic} publish", kind="producer", attributes={
                "messaging.system": "gcp_pubsub", "messaging.destination.name": topic,
                "messaging.operation.type": "send"}) as current:
            future = self._publisher.publish(path, message.model_dump_json().encode("utf-8"),
                                             **(attributes | tracing.carrier()))
            message_id = future.result(timeout=self._timeout_s)
            tracing.annotate(current, {"messaging.message.id": message_id})
            return message_id
