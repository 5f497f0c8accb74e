"""Slack threads and GitHub issues: loaders on real-format payloads, retries on a flaky source, and the ingestion
DAGs under ``dag.test()`` (first run ingests, unchanged re-run writes nothing, edits update, deletions prune)."""

from __future__ import annotations

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.model import SourceKind
from askflow.ingest.sources.github_issues import load_repo_issues
from askflow.ingest.sources.slack import load_channel_threads
from tests.support.dag_runner import dag_env, run_dag
from tests.support.loopback_apis import GitHubAPI, SlackAPI


@pytest.fixture
def slack():
    api = SlackAPI()
    api.channels["C1"] = [
        {"ts": "1700000000.000100", "text": "How do I retry a sensor?", "replies": [
            {"ts": "1700000001.000100", "text": "Set retries and retry_delay on the sensor."},
            {"ts": "1700000002.000100", "text": "Thanks, that worked"}]},
        {"ts": "1700000100.000100", "text": "Deploys are frozen on Friday"},
        {"ts": "1700000200.000100", "text": "", "subtype": "channel_join"},
    ]
    yield api
    api.stop()


@pytest.fixture
def github():
    api = GitHubAPI()
    api.issues["acme/pipes"] = [
        {"number": 1, "title": "Scheduler crashes on DST change", "body": "Traceback in scheduler loop",
         "state": "closed", "labels": ["bug", "scheduler"], "closed_at": "2024-03-10T12:00:00Z",
         "comments": ["Fixed in 2.8.1", "Confirmed"]},
        {"number": 2, "title": "Add pools to the UI", "body": "Feature request", "labels": ["enhancement"]},
        {"number": 3, "title": "Fix typo", "body": "PR", "pull_request": True},
    ]
    yield api
    api.stop()


def test_slack_threads_become_documents_with_permalinks_through_rate_limits(slack):
    slack.fail("conversations.history", 429, {"Retry-After": "1"})
    slack.fail("conversations.replies", 500)
    client = bootstrap(Settings(slack_bot_token="xoxb-test", slack_api_url=slack.base_url)).slack_client
    documents = load_channel_threads(client, "C1")
    assert [d.doc_id for d in documents] == ["slack:C1/1700000000.000100", "slack:C1/1700000100.000100"]
    thread = documents[0]
    assert thread.kind is SourceKind.SLACK and thread.title == "How do I retry a sensor?"
    assert "U2: Set retries and retry_delay on the sensor." in thread.text
    assert thread.url == "https://acme.slack.com/archives/C1/p1700000000000100"
    assert thread.metadata["replies"] == 2
    history = [c for c in slack.calls if c["path"].endswith("conversations.history")]
    assert len(history) == 3  # one 429, then two pages
    assert all(c["headers"]["Authorization"] == "Bearer xoxb-test" for c in slack.calls)


def test_github_issues_keep_state_labels_and_comments_and_skip_pull_requests(github):
    github.fail("/issues", 502)
    client = bootstrap(Settings(github_api_url=github.url, github_token="ghp_test")).github_client
    documents = load_repo_issues(client, "acme/pipes")
    assert [d.doc_id for d in documents] == ["github:acme/pipes/issues/1", "github:acme/pipes/issues/2"]
    fixed = documents[0]
    assert fixed.text.startswith("Issue #1 in acme/pipes — closed (closed 2024-03-10); labels: bug, scheduler")
    assert "commenter0: Fixed in 2.8.1" in fixed.text
    assert fixed.metadata["state"] == "closed"
    assert fixed.metadata["labels"] == ["bug", "scheduler"] and fixed.metadata["closed_at"] == "2024-03-10"
    assert documents[1].metadata["state"] == "open" and documents[1].metadata["closed_at"] is None
    assert fixed.url == "https://github.com/acme/pipes/issues/1"


def _embedding_calls(wire) -> int:
    return len([c for c in wire.calls if c["path"].endswith("/embeddings")])


@pytest.mark.airflow
def test_slack_dag_is_incremental_and_survives_a_flaky_api(airflow_env, pg_url, wire, slack, collection_name):
    env = dag_env(airflow_env, pg_url, wire, collection_name, slack_api_url=slack.base_url,
                  slack_bot_token="xoxb-test", slack_channels=["C1"])
    store = PgVectorStore(url=pg_url, collection=collection_name)
    slack.fail("conversations.history", 429, {"Retry-After": "1"})
    slack.fail("chat.getPermalink", 503)
    assert run_dag("askflow_ingest_slack.py", {}, env) == "success"
    first = store.document_fingerprints("slack:")
    assert set(first) == {"slack:C1/1700000000.000100", "slack:C1/1700000100.000100"}

    wire.calls.clear()
    assert run_dag("askflow_ingest_slack.py", {}, env) == "success"
    assert _embedding_calls(wire) == 0 and store.document_fingerprints("slack:") == first

    slack.channels["C1"][0]["replies"].append({"ts": "1700000003.000100", "text": "Also see deferrable sensors"})
    del slack.channels["C1"][1]
    assert run_dag("askflow_ingest_slack.py", {}, env) == "success"
    after = store.document_fingerprints("slack:")
    assert set(after) == {"slack:C1/1700000000.000100"}
    assert after["slack:C1/1700000000.000100"] != first["slack:C1/1700000000.000100"]
    store.close()


@pytest.mark.airflow
def test_github_dag_is_incremental_and_survives_a_flaky_api(airflow_env, pg_url, wire, github, collection_name):
    env = dag_env(airflow_env, pg_url, wire, collection_name, github_api_url=github.url,
                  github_repos=["acme/pipes"])
    store = PgVectorStore(url=pg_url, collection=collection_name)
    github.fail("/comments", 500, times=2)
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    first = store.document_fingerprints("github:")
    assert set(first) == {"github:acme/pipes/issues/1", "github:acme/pipes/issues/2"}
    hits = store.keyword_search("scheduler crashes daylight saving", limit=3)
    assert hits[0].chunk.metadata["state"] == "closed" and hits[0].chunk.kind is SourceKind.GITHUB

    wire.calls.clear()
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    assert _embedding_calls(wire) == 0

    github.issues["acme/pipes"][1].update(state="closed", closed_at="2024-05-01T00:00:00Z")
    del github.issues["acme/pipes"][0]
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    after = store.document_fingerprints("github:")
    assert set(after) == {"github:acme/pipes/issues/2"}
    assert after["github:acme/pipes/issues/2"] != first["github:acme/pipes/issues/2"]
    store.close()
