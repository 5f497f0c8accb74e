"""One trace per question: the API and the worker (functions under functions-framework) export OTLP to a loopback
collector; the question crosses the Pub/Sub emulator with its trace context in the message's attributes."""

from __future__ import annotations

import os
import time

import pytest
from google.cloud import firestore

from tests.support.otlp_collector import OTLPCollector
from tests.test_ask_path import _settings, ask, indexed, wait_terminal  # noqa: F401 - the indexed docs fixture


@pytest.fixture(scope="module")
def traced_api(local_stack, indexed, pg_url, openai_server):  # noqa: F811
    collector = OTLPCollector()
    exporter_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    saved = {key: os.environ.get(key) for key in exporter_env}
    os.environ.update(exporter_env)
    try:
        settings = _settings(pg_url, "traced", tracing="otlp", openai_base_url=openai_server.base_url,
                             openai_api_key="k", cheap_model="loopback-cheap", strong_model="loopback-strong",
                             model_prices={"loopback-cheap": [0.15, 0.6], "loopback-strong": [2.5, 10.0]})
        api, _ = local_stack.start_functions(settings)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    yield api.url, collector
    collector.stop()


def test_a_question_is_one_trace_from_the_api_through_pubsub_to_the_model_calls(traced_api, wire):
    api_url, collector = traced_api
    record = wait_terminal(api_url, ask(api_url, "How do tasks pull an XCom value?"))
    assert record["status"] == "complete" and record["mode"] == "llm"
    stored = firestore.Client(project="askflow-test").collection("requests").document(record["request_id"]).get()
    trace_id = stored.get("trace_id")
    assert trace_id and len(trace_id) == 32 and "trace_id" not in record  # kept for the admin, not shown publicly

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(s["name"] == "write answer" for s in collector.trace(trace_id)):
        time.sleep(0.2)
    spans = collector.trace(trace_id)
    named = {span["name"]: span for span in spans}
    api = named["POST /requests"]
    publish = next(span for span in spans if span["name"].endswith(" publish"))
    worker = named["answer request"]
    assert api["parent_id"] is None and api["kind"] == 2  # SERVER, the trace's root
    assert publish["parent_id"] == api["span_id"] and publish["kind"] == 4  # PRODUCER, in the API's process
    assert worker["parent_id"] == publish["span_id"] and worker["kind"] == 5  # CONSUMER: across Pub/Sub
    for child in ("claim", "search hybrid", "write answer", "chat loopback-cheap", "chat loopback-strong"):
        assert named[child]["parent_id"] == worker["span_id"], child
    keyword_searches = [span for span in spans if span["name"] == "search keywords"]
    assert len(keyword_searches) == 3 and all(s["parent_id"] == worker["span_id"] for s in keyword_searches)
    for model in ("chat loopback-cheap", "chat loopback-strong"):
        attributes = named[model]["attributes"]
        assert attributes["gen_ai.request.model"] == model.split()[1]
        assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
    assert stored.get("cost_usd") > 0 and named["write answer"]["attributes"]["askflow.cost_usd"] > 0
