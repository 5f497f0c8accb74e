"""Schemathesis against the running API function, from the OpenAPI spec in docs/: no 5xx, and every response
matches the spec (status codes, content types, bodies)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.test_ask_path import _settings, indexed  # noqa: F401 - the indexed docs fixture

SPEC = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)
# The API refuses NUL bytes (the spec says so in words: a pattern excluding them is ignored by schemathesis'
# edge cases); this is schemathesis' own switch for such an API. Lone surrogates never come: the codec is UTF-8.
schema.config.generation.update(allow_x00=False)


@pytest.fixture(scope="module")
def fuzz_api(local_stack, indexed, pg_url) -> str:  # noqa: F811
    api, _ = local_stack.start_functions(_settings(pg_url, "fuzz"))
    return api.url.rstrip("/")


@schema.parametrize()
@settings(max_examples=int(os.environ.get("ASKFLOW_FUZZ_EXAMPLES", "25")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_matches_its_spec_and_never_fails_with_5xx(case, fuzz_api):
    response = case.call_and_validate(base_url=fuzz_api)
    assert response.status_code < 500
