"""PubSubEventBus: JSON payloads on Pub/Sub topics named by settings."""

from __future__ import annotations

import json
from typing import Any

from askflow.ports import EventBus


class PubSubEventBus(EventBus):
    def __init__(self, *, publisher: Any, project_id: str, timeout_s: float = 30.0) -> None:
        self._publisher = publisher
        self._project_id = project_id
        self._timeout_s = timeout_s

    def publish(self, topic: str, payload: dict[str, Any], **attributes: str) -> str:
        path = self._publisher.topic_path(self._project_id, topic)
        future = self._publisher.publish(path, json.dumps(payload).encode("utf-8"), **attributes)
        return future.result(timeout=self._timeout_s)
