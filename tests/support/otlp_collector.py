"""A loopback OpenTelemetry collector: receives OTLP/HTTP trace exports (protobuf), as the functions' exporters send
them, and keeps every span as a dict (ids in hex) for tests to read."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer


class OTLPCollector(LoopbackServer):
    def __init__(self) -> None:
        self.spans: list[dict] = []
        super().__init__()

    def trace(self, trace_id: str) -> list[dict]:
        with self._lock:
            return [span for span in self.spans if span["trace_id"] == trace_id]

    def _handler(self):
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                    ExportTraceServiceResponse,
                )

                export = ExportTraceServiceRequest()
                export.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                spans = []
                for resource_spans in export.resource_spans:
                    service = {a.key: _value(a.value) for a in resource_spans.resource.attributes}.get("service.name")
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            spans.append({
                                "name": span.name, "service": service, "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(), "parent_id": span.parent_span_id.hex() or None,
                                "kind": span.kind, "attributes": {a.key: _value(a.value) for a in span.attributes},
                                "links": [link.trace_id.hex() for link in span.links]})
                with collector._lock:
                    collector.spans.extend(spans)
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
