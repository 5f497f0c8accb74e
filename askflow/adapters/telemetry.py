"""Configure OpenTelemetry's SDK for this process from ``ASKFLOW_TRACING``: ``gcp`` (Cloud Trace, the exporter for
Google Cloud), ``otlp`` (any collector; the standard ``OTEL_EXPORTER_OTLP_*`` variables say where), ``console``,
or ``none``. Spans go out in batches (``OTEL_BSP_*`` tune them); ``askflow.tracing.flush`` exports what is
pending."""

from __future__ import annotations

import threading

_configured = threading.Lock()
_done = False


def configure_tracing(mode: str, *, service: str, project_id: str) -> None:
    """Once per process; ``none`` leaves tracing off (nothing is imported)."""
    global _done
    if mode == "none":
        return
    with _configured:
        if _done:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from askflow import tracing

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(_exporter(mode, project_id)))
        trace.set_tracer_provider(provider)
        # a flush after each event is bounded: a collector that is down delays a worker's ack by a second at most
        tracing.enable(flush=lambda: provider.force_flush(timeout_millis=1000))
        _done = True


def _exporter(mode: str, project_id: str):
    if mode == "gcp":
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        return CloudTraceSpanExporter(project_id=project_id)
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(timeout=2)  # seconds, retries included
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter()
