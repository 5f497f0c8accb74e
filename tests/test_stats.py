"""What askflow costs and how it does: ``askflow stats`` and the admin page (behind the API key) over requests
seeded in the Firestore emulator."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request

import pytest
from google.cloud import firestore

from askflow.domain.clock import utcnow
from askflow.domain.model import Rating, Request, RequestStatus
from tests.test_ask_path import _settings, indexed  # noqa: F401 - the indexed docs fixture
from tests.test_cli import askflow
from tests.test_web_page import SCREENSHOTS, browser, page  # noqa: F401 - Chromium, at phone width

KEY = "admin-test-key"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _seeded(n: int, now: dt.datetime) -> Request:
    created = now - dt.timedelta(hours=2 + n)
    kind = n % 4  # answered llm, answered cached, failed, answered and rated down
    request = Request(request_id=f"stats-{n}", question=f"Question {n} about pools?", created_at=created,
                      status=RequestStatus.FAILED if kind == 2 else RequestStatus.COMPLETE,
                      error="timed out" if kind == 2 else None, answer=None if kind == 2 else "An answer [1].",
                      mode=None if kind == 2 else ("cached" if kind == 1 else "llm"),
                      completed_at=None if kind == 2 else created + dt.timedelta(seconds=1 + kind),
                      cost_usd=None if kind == 2 else (0.0 if kind == 1 else 0.002), trace_id=TRACE if n == 0 else None)
    if kind in (0, 3):
        request = request.model_copy(update={"ratings": {"asker": Rating(positive=kind == 0, at=created)}})
    return request


@pytest.fixture(scope="module")
def seeded_stats(local_stack):
    now = utcnow()
    collection = firestore.Client(project="askflow-test").collection("requests_stats")
    for n in range(8):
        request = _seeded(n, now)
        collection.document(request.request_id).set(request.model_dump(exclude_none=True))
    return {"ASKFLOW_REQUESTS_COLLECTION": "requests_stats"}


def test_stats_prints_the_periods_figures(local_stack, seeded_stats):
    env = {**local_stack.env, **seeded_stats}
    result = askflow("stats", "--period", "7d", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["questions"], stats["answered"], stats["failed"]) == (8, 6, 2)
    assert stats["failures_by_reason"] == {"timed out": 2}
    assert stats["cache_hits"] == 2 and stats["cache_hit_share"] == pytest.approx(2 / 6, abs=0.001)
    assert stats["cost_usd"] == pytest.approx(0.008)
    assert stats["cost_per_answer_usd"] == pytest.approx(0.008 / 6, abs=1e-6)
    assert stats["rated"] == 4 and stats["rated_up_share"] == 0.5
    assert stats["latency_p50_ms"] == 2000.0 and stats["latency_p95_ms"] == 4000.0
    assert sum(day["questions"] for day in stats["days"]) == 8 and len(stats["days"]) == 8  # UTC dates, both ends
    table = askflow("stats", env=env)
    assert table.returncode == 0 and "8 questions" in table.stdout and "timed out" in table.stdout
    bad = askflow("stats", "--period", "forever", env=env)
    assert bad.returncode == 2 and "askflow: period" in bad.stderr


@pytest.fixture(scope="module")
def keyed_admin(local_stack, indexed, pg_url, seeded_stats):  # noqa: F811
    settings = _settings(pg_url, "admin", api_key=KEY, requests_collection="requests_stats")
    api, _ = local_stack.start_functions(settings)
    return api.url


def test_the_admin_page_needs_the_key_and_shows_the_figures_and_traces(keyed_admin, page):  # noqa: F811
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{keyed_admin}admin", timeout=10)
    assert refused.value.code == 401 and "API key" in json.load(refused.value)["error"]

    page.set_extra_http_headers({"X-API-Key": KEY})
    page.goto(f"{keyed_admin}admin")
    figures = page.locator("dl.figures").inner_text()
    assert "Questions\n8" in figures and "$0.0080" in figures and "2 (33%)" in figures
    assert page.locator("svg.chart").count() == 2 and page.locator("svg.chart rect").count() >= 1
    assert page.locator(f"code:text('{TRACE}')").count() == 1  # from a bad answer to its trace
    assert "timed out: 2" in page.locator("body").inner_text()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-phone.png"), full_page=True)


def test_the_web_pages_cookie_opens_the_asking_api_but_not_the_admin_pages(keyed_admin):
    with urllib.request.urlopen(keyed_admin, timeout=10) as loaded:  # the web page sets its session cookie
        cookie = loaded.headers["Set-Cookie"].split(";")[0]
    asked = urllib.request.Request(f"{keyed_admin}requests?good=true", headers={"Cookie": cookie})
    with urllib.request.urlopen(asked, timeout=10) as response:
        assert response.status == 200
    for path in ("admin", "insights"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{keyed_admin}{path}", headers={"Cookie": cookie}),
                                   timeout=10)
        assert refused.value.code == 403 and "error" in json.load(refused.value)
    keyed = urllib.request.Request(f"{keyed_admin}insights", headers={"X-API-Key": KEY})
    with urllib.request.urlopen(keyed, timeout=10) as response:
        assert response.status == 200
