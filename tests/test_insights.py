"""Question insights: the askflow_question_insights DAG under dag.test() on the Firestore emulator, with requests
seeded from three topics (one rated 👎, one 👍, one partly failed), the all-MiniLM-L6-v2 embeddings and the indexed
test docs; the gaps filed on the loopback GitHub API; the /insights page in Chromium."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from google.cloud import firestore

from askflow.config import Settings
from askflow.domain.model import Rating, Request, RequestStatus, Source
from askflow.insights.model import parse_period
from tests.support.dag_runner import run_dag
from tests.support.loopback_apis import GitHubAPI
from tests.test_ask_path import COLLECTION, indexed  # noqa: F401 - the indexed docs fixture
from tests.test_web_page import SCREENSHOTS, browser, page  # noqa: F401 - Chromium, at phone width

END = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
CATCHUP = [
    "How do I stop Airflow from running old DAG runs when I unpause a DAG?",
    "How can I disable catchup for my DAG?",
    "Why does my DAG backfill all the missed runs after I deploy it?",
    "Prevent catchup of past schedule intervals in Airflow",
    "My DAG created dozens of runs for past dates, how do I turn that off?",
    "What does catchup=False do in a DAG definition?",
]
XCOM = [
    "How do tasks pull an XCom value?",
    "How do I pass data between tasks with XCom?",
    "How can one task read the XCom return value of another task?",
    "What is the maximum size of an XCom?",
    "How do I push a value to XCom from a PythonOperator?",
    "My email is jane.doe@example.com, why does xcom_pull return None for my task?",
]
CONNECTIONS = [
    "How do I add a Postgres connection in Airflow?",
    "Where does Airflow store connection passwords?",
    "How can I define an Airflow connection with an environment variable?",
    "How do I use a secrets backend for Airflow connections?",
    "What is the URI format for an Airflow connection?",
    "How do I test an Airflow connection from the UI?",
]
PRIVATE = "jane.doe@example.com"


def seeded(question: str, n: int, *, positive: bool | None, failed: bool = False, excerpt: str) -> Request:
    created = END - dt.timedelta(days=1 + n % 6, hours=n)
    request = Request(request_id=f"insight-{n}", question=question, created_at=created, updated_at=created,
                      status=RequestStatus.FAILED if failed else RequestStatus.COMPLETE,
                      error="timed out" if failed else None,
                      answer=None if failed else f"An answer [1] about {question[:30]}.",
                      sources=[] if failed else [Source(n=1, title="XComs", url="https://docs.example.org/xcoms.rst",
                                                        doc_id="docs:xcoms.rst", excerpt=excerpt)],
                      mode=None if failed else "llm")
    if positive is not None:
        request = request.model_copy(update={"ratings": {"asker": Rating(positive=positive, at=created)}})
    return request


@pytest.fixture(scope="module")
def insights_env(local_stack, indexed, pg_url, airflow_env, tmp_path_factory):  # noqa: F811
    from askflow.dev.local_stack import settings_env

    github = GitHubAPI()
    data_dir = tmp_path_factory.mktemp("insights-data")
    settings = Settings(database_url=pg_url, collection=COLLECTION, requests_collection="requests_insights",
                        insights_collection="insights_test", data_dir=data_dir, insights_min_cluster_size=3,
                        github_api_url=github.url, insights_docs_repo="acme/docs", learned_collection="learned_ins")
    client = firestore.Client(project="askflow-test")
    requests = client.collection(settings.requests_collection)
    n = 0
    for questions, positive, failing in ((CATCHUP, False, 0), (XCOM, True, 0), (CONNECTIONS, None, 4)):
        for i, question in enumerate(questions):
            excerpt = ("XComs let tasks push and pull small values." if questions is XCOM
                       else "The scheduler runs DAGs on their schedule.")
            request = seeded(question, n, positive=positive, failed=i < failing, excerpt=excerpt)
            requests.document(request.request_id).set(request.model_dump(exclude_none=True))
            n += 1
    yield {"env": {**airflow_env, **local_stack.env, **settings_env(settings)}, "settings": settings, "github": github,
           "client": client}
    github.stop()


def _reports(client, settings) -> list[dict]:
    return [snapshot.to_dict() for snapshot in client.collection(settings.insights_collection).stream()]


def test_the_dag_clusters_by_topic_ranks_the_gaps_and_shows_no_private_question(insights_env):
    env, settings, client = insights_env["env"], insights_env["settings"], insights_env["client"]
    conf = {"period": "7d", "end": END.isoformat(), "min_cluster_size": 3}
    assert run_dag("askflow_question_insights.py", conf, env) == "success"
    (report,) = _reports(client, settings)
    assert report["requests"] == 18 and report["report_id"] == "20261116T0000-20261123T0000"

    ids = {q: f"insight-{n}" for n, q in enumerate(CATCHUP + XCOM + CONNECTIONS)}
    clusters = report["clusters"]
    by_topic = {}
    for name, topic in (("catchup", CATCHUP), ("xcom", XCOM), ("connections", CONNECTIONS)):
        owner = max(clusters, key=lambda c: sum(q in c["representatives"] for q in topic))
        by_topic[name] = owner
        assert sum(q in topic for q in owner["representatives"]) == len(owner["representatives"])  # one topic
    assert len({c["cluster"] for c in by_topic.values()}) == 3  # three topics, three clusters
    assert sorted(c["size"] for c in clusters) == [6, 6, 6] and report["noise"] == 0
    assert "catchup" in by_topic["catchup"]["label"] and "xcom" in by_topic["xcom"]["label"]
    assert by_topic["catchup"]["rated_down"] == 6 and by_topic["xcom"]["rated_up"] == 6
    assert by_topic["connections"]["failed_share"] == pytest.approx(4 / 6, abs=0.01)

    gaps = [gap["cluster"] for gap in report["gaps"]]
    assert by_topic["catchup"]["cluster"] in gaps  # rated 👎: a gap ...
    assert by_topic["xcom"]["cluster"] not in gaps  # ... and the one rated 👍 is not
    first_gap = report["gaps"][0]
    assert first_gap["closest_pages"] and "did not help" in first_gap["finding"]

    html = Path(report["files"]["html"]).read_text()
    assert PRIVATE not in json.dumps(report) and PRIVATE not in html  # never verbatim, anywhere
    rows = Path(report["files"]["csv"]).read_text().strip().splitlines()
    assert rows[0].startswith("cluster,name,label,questions") and len(rows) == 4 and PRIVATE not in "".join(rows)
    assert ids  # the seeded ids are the report's requests

    built = report["built_at"]
    assert run_dag("askflow_question_insights.py", conf | {"file_issues": True}, env) == "success"
    (again,) = _reports(client, settings)  # the same period: replaced, not added
    assert again["built_at"] != built

    filed = insights_env["github"].issues["acme/docs"]
    assert len(filed) == len(again["gaps"]) >= 1
    assert all(issue["labels"] == ["askflow-gap"] and "<!-- askflow-gap:" in issue["body"] for issue in filed)
    assert run_dag("askflow_question_insights.py", conf | {"file_issues": True}, env) == "success"
    assert len(insights_env["github"].issues["acme/docs"]) == len(filed)  # updated on rerun, not filed again
    patched = [c for c in insights_env["github"].calls if c["method"] == "PATCH"]
    assert len(patched) == len(filed)


def test_the_insights_page_renders_the_chart_and_the_gaps(page, local_stack, insights_env):  # noqa: F811
    from playwright.sync_api import expect

    settings = insights_env["settings"]
    if not _reports(insights_env["client"], settings):  # this test alone: build the report first
        assert run_dag("askflow_question_insights.py", {"end": END.isoformat(), "min_cluster_size": 3},
                       insights_env["env"]) == "success"
    api, _ = local_stack.start_functions(settings.model_copy(update={
        "questions_topic": "questions-insights", "questions_subscription": "questions-insights-worker"}))
    page.goto(f"{api.url}insights")
    expect(page.locator("svg.chart polyline.series")).to_have_count(3)
    expect(page.locator("ol.gaps li.gap").first).to_contain_text("did not help")
    assert page.locator("table tbody tr").count() == 3
    assert PRIVATE not in page.content()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # phone width, no scrolling
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "insights-phone.png"), full_page=True)


def test_the_cli_prints_the_report_as_a_table_or_json_with_progress_on_stderr(local_stack, insights_env):
    from askflow.dev.local_stack import settings_env
    from tests.test_cli import askflow

    env = {**local_stack.env, **settings_env(insights_env["settings"])}
    period = ["--period", "7d", "--end", "2026-11-23T00:00", "--min-cluster-size", "3"]
    table = askflow("insights", *period, env=env)
    assert table.returncode == 0, table.stderr
    assert "18 questions" in table.stdout and table.stdout.count("[GAP]") >= 1 and PRIVATE not in table.stdout
    assert "embed" in table.stderr and "report 20261116T0000-20261123T0000" in table.stderr  # progress, on stderr
    report = json.loads(askflow("insights", *period, "--format", "json", env=env).stdout)
    assert report["requests"] == 18 and len(report["clusters"]) == 3
    assert len(_reports(insights_env["client"], insights_env["settings"])) == 1  # the same period, one report

    bad = askflow("insights", "--period", "a week", env=env)
    assert bad.returncode == 2 and "askflow: period 'a week'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(("text", "days"), [("7d", 7), ("24h", 1), ("2w", 14)])
def test_a_period_is_a_number_and_a_unit(text, days):
    assert parse_period(text) == dt.timedelta(days=days)


@pytest.mark.parametrize("text", ["", "7", "0d", "7 days", "-1d"])
def test_a_bad_period_is_refused_with_its_form(text):
    from askflow.domain.errors import InvalidInput

    with pytest.raises(InvalidInput, match="7d, 24h, 2w"):
        parse_period(text)
