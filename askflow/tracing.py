"""One trace per question: the API call, the publish, the worker's claim, each search, each model call and the
answer's write, joined by W3C ``traceparent`` (carried in the Pub/Sub message's attributes and kept on the
request, so grading can link to it).

The core opens spans through the OpenTelemetry API here; the composition root configures the SDK and an exporter
(``ASKFLOW_TRACING``) and then calls ``enable``. Until then nothing of OpenTelemetry is imported, so a function with
tracing off pays nothing for it at cold start.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

_enabled = False
_flush: Callable[[], None] | None = None


def enable(flush: Callable[[], None] | None = None) -> None:
    """Spans are recorded from now on (the SDK is configured); ``flush`` exports what is pending."""
    global _enabled, _flush
    _enabled, _flush = True, flush


def enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def span(name: str, *, kind: str = "internal", parent: Mapping[str, str] | None = None,
         links: Sequence[str] = (), attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A span around the block (``None`` when tracing is off). ``parent``: a carrier to continue (message
    attributes, HTTP headers); ``links``: traceparents of related traces (the requests a grading batch grades)."""
    if not _enabled:
        yield None
        return
    from opentelemetry import propagate, trace

    context = propagate.extract(dict(parent)) if parent is not None else None
    linked = [trace.Link(found) for found in (_span_context(t) for t in links) if found is not None]
    tracer = trace.get_tracer("askflow")
    with tracer.start_as_current_span(name, context=context, kind=getattr(trace.SpanKind, kind.upper()),
                                      links=linked, attributes=_clean(attributes or {})) as current:
        yield current


def annotate(current: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to a span ``span`` gave (nothing when it gave ``None``)."""
    if current is not None:
        current.set_attributes(_clean(attributes))


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``), to send along; empty when tracing is off."""
    if not _enabled:
        return {}
    from opentelemetry import propagate

    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def traceparent() -> str | None:
    return carrier().get("traceparent")


def trace_id(parent: str | None) -> str | None:
    """The trace id of a ``traceparent`` (``00-<trace id>-<span id>-<flags>``)."""
    parts = (parent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def in_context(work: Callable[..., Any]) -> Callable[..., Any]:
    """``work`` run in a copy of the caller's context: a thread pool's tasks then join the caller's trace."""
    context = contextvars.copy_context()

    @functools.wraps(work)
    def run(*args: Any, **kwargs: Any) -> Any:
        return context.copy().run(work, *args, **kwargs)

    return run


def flush() -> None:
    """Export what is pending (a function may be frozen between requests)."""
    if _flush is not None:
        _flush()


def _span_context(parent: str | None):
    if not parent:
        return None
    from opentelemetry import propagate, trace

    found = trace.get_current_span(propagate.extract({"traceparent": parent})).get_span_context()
    return found if found.is_valid else None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry can hold: no ``None``."""
    return {key: value for key, value in attributes.items() if value is not None}
