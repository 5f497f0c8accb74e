"""Property-based tests of the API's edge (hypothesis): whatever arrives — any JSON, any bytes, any path id, any
header — the answer is a JSON error in the 4xx range or a success, never a 500; and nothing that was refused was
stored or queued. Fast: the handlers run on in-memory fakes of the ports."""

from __future__ import annotations

import json
import string

from flask import Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from askflow.config import Settings
from askflow.entrypoints import http_api
from tests.fakes import FakeEventBus, InMemoryRequestStore

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
BODIES = st.one_of(
    st.fixed_dictionaries({"question": st.text()}, optional={
        "thread_id": st.text(max_size=140), "fresh": JSON, "extra": JSON}),
    st.fixed_dictionaries({"positive": JSON}, optional={"comment": JSON, "rater": JSON}),
    JSON,
)
IDS = st.text(alphabet=string.ascii_letters + string.digits + "_-./%:\x00é", min_size=0, max_size=70)
TOKENS = st.none() | st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=140)


class Components:
    def __init__(self) -> None:
        self.settings = Settings(project_id="props")
        self.requests = InMemoryRequestStore()
        self.events = FakeEventBus()
        self.budgets = None  # no limits set


def _request(method: str, path: str, body: bytes, token: str | None) -> Request:
    headers = {"Content-Type": "application/json"} | ({"X-Asker-Token": token} if token is not None else {})
    return Request(EnvironBuilder(method=method, path=path, data=body, headers=headers).get_environ())


def _call(components: Components, method: str, path: str, body: bytes, token: str | None):
    response, status, headers = http_api.handle(_request(method, path, body, token), components)
    text = response if isinstance(response, str | bytes) else "".join(response)
    return status, json.loads(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, token=TOKENS)
def test_any_ask_is_queued_or_refused_with_a_4xx_and_a_refusal_stores_nothing(body, token):
    components = Components()
    status, payload = _call(components, "POST", "/requests", json.dumps(body).encode(), token)
    assert status in (202, 400, 404), (status, payload)
    if status == 202:
        assert payload["request_id"] in components.requests.requests and len(components.events.published) == 1
    else:
        assert isinstance(payload["error"], str) and payload["error"]
        assert components.requests.requests == {} and components.events.published == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_id=IDS, body=BODIES, token=TOKENS, method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
def test_any_read_or_rating_of_any_id_is_answered_with_json_never_a_500(request_id, body, token, method):
    components = Components()
    for path in (f"/requests/{request_id}", f"/requests/{request_id}/feedback"):
        status, payload = _call(components, method, path, json.dumps(body).encode(), token)
        assert status < 500, (path, status, payload)
        assert status in (200, 202) or payload["error"]  # "/requests/" is the ask route itself


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=2000))
def test_any_bytes_as_a_body_are_a_4xx(raw):
    status, payload = _call(Components(), "POST", "/requests", raw, None)
    assert status in (202, 400, 413) and (status == 202 or payload["error"])
