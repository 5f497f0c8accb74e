"""A loopback OpenLineage backend (as Marquez receives them): keeps every run event the OpenLineage HTTP transport
posts to ``/api/v1/lineage``, for tests to read."""

from __future__ import annotations

import gzip
import json
from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer


class OpenLineageCollector(LoopbackServer):
    def __init__(self) -> None:
        self.events: list[dict] = []
        super().__init__()

    def transport(self) -> str:
        """``AIRFLOW__OPENLINEAGE__TRANSPORT`` pointing the provider at this server."""
        return json.dumps({"type": "http", "url": self.url, "endpoint": "api/v1/lineage"})

    def task_events(self, dag_id: str, task_id: str) -> list[dict]:
        """The run events of one task (job ``DAG_ID.TASK_ID``), as received."""
        with self._lock:
            return [e for e in self.events if e.get("job", {}).get("name") == f"{dag_id}.{task_id}"]

    def dag_events(self, dag_id: str) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("job", {}).get("name") == dag_id]

    def _handler(self):
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with collector._lock:
                    collector.events.append(json.loads(body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
