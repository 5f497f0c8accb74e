"""Slack threads and GitHub issues: loaders on real-format payloads, retries on a flaky source, incremental reruns
(what each costs in API calls, counted by the loopback servers), pruning, askflow's own words left out, and the
ingestion DAGs under ``dag.test()`` (first run ingests, unchanged re-run writes nothing, edits update, deletions
prune)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from askflow.adapters.github_gaps import marker
from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.model import SourceKind
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.pipeline import index_github_repo, index_slack_channel, reconcile_due
from askflow.ingest.sources.github_issues import read_repo_issues
from askflow.ingest.sources.slack import Workspace, read_channel
from askflow.insights.model import CoverageGap
from tests.fakes import FakeVectorStore, HashEmbeddings
from tests.support.dag_runner import dag_env, run_dag
from tests.support.loopback_apis import GitHubAPI, SlackAPI

WEEK_S = 7 * 86_400
NOW = dt.datetime.now(dt.timezone.utc)


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
         "updated_at": "2024-03-10T12:00:00Z", "comments": ["Fixed in 2.8.1", "Confirmed"]},
        {"number": 2, "title": "Add pools to the UI", "body": "Feature request", "labels": ["enhancement"],
         "updated_at": "2024-04-01T00:00:00Z"},
        {"number": 3, "title": "Fix typo", "body": "PR", "pull_request": True},
    ]
    yield api
    api.stop()


def slack_client(api: SlackAPI):
    return bootstrap(Settings(slack_bot_token="xoxb-test", slack_api_url=api.base_url)).slack_client


def github_client(api: GitHubAPI):
    return bootstrap(Settings(github_api_url=api.url, github_token="ghp_test")).github_client


class Index:
    """A channel's or a repository's runs into one in-memory store, as the DAG makes them."""

    def __init__(self, strategy: ChunkingStrategy | None = None) -> None:
        self.store, self.embeddings = FakeVectorStore(), HashEmbeddings()
        self.strategy = strategy or ChunkingStrategy()

    def channel(self, api: SlackAPI, channel: str = "C1", **options) -> dict:
        return index_slack_channel(channel, client=slack_client(api), store=self.store, embeddings=self.embeddings,
                                   strategy=self.strategy, answers_source="answers", reply_window_s=WEEK_S,
                                   **({"audiences": ["slack:workspace"]} | options))

    def repo(self, api: GitHubAPI, repo: str = "acme/pipes", **options) -> dict:
        return index_github_repo(repo, client=github_client(api), store=self.store, embeddings=self.embeddings,
                                 strategy=self.strategy, answers_source="answers",
                                 **({"audiences": ["public"]} | options))

    def chunks(self, doc_id: str) -> list:
        return sorted((c for c, _ in self.store.stored.values() if c.doc_id == doc_id), key=lambda c: c.index)

    def stored(self, prefix: str) -> dict[str, str]:
        return self.store.document_fingerprints(prefix)


def calls_to(api, name: str) -> list[dict]:
    return [call for call in api.calls if api.call_name(call) == name]


def params(call: dict) -> dict:
    return {**call["query"], **call["body"]}


# -- Slack ---------------------------------------------------------------------------------------------------------
def test_slack_threads_become_documents_with_permalinks_through_rate_limits(slack):
    slack.max_page = 2
    slack.fail("conversations.history", 429, {"Retry-After": "1"})
    slack.fail("conversations.replies", 500)
    client = slack_client(slack)
    changes = read_channel(client, "C1", stored={}, workspace=Workspace.of(client), reply_window_s=WEEK_S)
    documents = changes.documents
    assert [d.doc_id for d in documents] == ["slack:C1/1700000000.000100", "slack:C1/1700000100.000100"]
    thread = documents[0]
    assert thread.kind is SourceKind.SLACK and thread.title == "How do I retry a sensor?"
    assert "U2: Set retries and retry_delay on the sensor." in thread.text
    assert thread.url == "https://acme.slack.com/archives/C1/p1700000000000100"  # from auth.test's workspace URL
    assert thread.metadata["replies"] == 2 and thread.metadata["latest_reply"] == "1700000002.000100"
    assert changes.oldest is None and changes.listed == 3
    assert len(calls_to(slack, "conversations.history")) == 3  # one 429, then two pages
    assert not calls_to(slack, "chat.getPermalink")
    assert all(c["headers"]["Authorization"] == "Bearer xoxb-test" for c in slack.calls)


def test_an_unchanged_rerun_of_a_channel_makes_no_replies_or_permalink_calls(slack):
    index = Index()
    index.channel(slack)
    first, embedded = index.stored("slack:"), len(index.embeddings.embedded)
    slack.calls.clear()
    rerun = index.channel(slack)
    assert slack.counts() == Counter({"auth.test": 1, "conversations.history": 1})
    (history,) = calls_to(slack, "conversations.history")
    assert params(history)["oldest"] == f"{1700000100.000100 - WEEK_S:.6f}"  # the newest thread less the window
    assert rerun["documents_written"] == 0 and len(index.embeddings.embedded) == embedded
    assert index.stored("slack:") == first


def test_a_thread_with_a_new_reply_is_read_again_alone(slack):
    slack.channels["C1"].append({"ts": "1700000300.000100", "text": "Pools or queues?", "replies": [
        {"ts": "1700000301.000100", "text": "Pools limit slots"}]})
    index = Index()
    index.channel(slack)
    first = index.stored("slack:")
    slack.channels["C1"][0]["replies"].append({"ts": "1700000400.000100", "text": "Also see deferrable sensors"})
    slack.calls.clear()
    rerun = index.channel(slack)
    assert [params(c)["ts"] for c in calls_to(slack, "conversations.replies")] == ["1700000000.000100"]
    assert rerun["documents_written"] == 1
    after = index.stored("slack:")
    assert after["slack:C1/1700000000.000100"] != first["slack:C1/1700000000.000100"]
    assert {k: v for k, v in after.items() if k != "slack:C1/1700000000.000100"} == \
        {k: v for k, v in first.items() if k != "slack:C1/1700000000.000100"}
    assert "Also see deferrable sensors" in index.chunks("slack:C1/1700000000.000100")[0].content


def test_a_deleted_thread_is_pruned_at_the_reconcile(slack):
    slack.channels["C1"].insert(0, {"ts": "1600000000.000100", "text": "Old question", "replies": [
        {"ts": "1600000001.000100", "text": "Old answer"}]})
    index = Index()
    index.channel(slack)
    assert "slack:C1/1600000000.000100" in index.stored("slack:")
    del slack.channels["C1"][0]  # older than the reply window: the incremental listing cannot see it go
    del slack.channels["C1"][-2]  # the newest thread: within the listing, pruned at once
    slack.calls.clear()
    rerun = index.channel(slack)
    assert rerun["full_sync"] is False and rerun["documents_pruned"] == 1
    assert set(index.stored("slack:")) == {"slack:C1/1600000000.000100", "slack:C1/1700000000.000100"}
    slack.calls.clear()
    reconcile = index.channel(slack, full_sync=True)
    assert reconcile["full_sync"] is True and reconcile["documents_pruned"] == 1
    assert set(index.stored("slack:")) == {"slack:C1/1700000000.000100"}
    assert slack.counts() == Counter({"auth.test": 1, "conversations.history": 1})  # no call per thread
    (history,) = calls_to(slack, "conversations.history")
    assert "oldest" not in params(history)


def test_the_bots_own_messages_are_not_indexed(slack):
    slack.channels["C1"][0]["replies"].append(
        {"ts": "1700000003.000100", "text": "askflow: set retries [1]", "user": "UBOT", "bot_id": "BBOT"})
    slack.channels["C1"].append({"ts": "1700000300.000100", "text": "Answered by askflow", "user": "UBOT",
                                 "bot_id": "BBOT"})
    index = Index()
    index.channel(slack)
    assert set(index.stored("slack:")) == {"slack:C1/1700000000.000100", "slack:C1/1700000100.000100"}
    thread = index.chunks("slack:C1/1700000000.000100")
    assert "askflow: set retries" not in " ".join(c.content for c in thread)
    assert thread[0].metadata["replies"] == 2

    # askflow answers in the thread again: read once (the sync point moved), then never again while nothing moves
    slack.channels["C1"][0]["replies"].append(
        {"ts": "1700000500.000100", "text": "askflow: see [2]", "user": "UBOT", "bot_id": "BBOT"})
    slack.calls.clear()
    index.channel(slack)
    assert len(calls_to(slack, "conversations.replies")) == 1
    slack.calls.clear()
    index.channel(slack)
    assert not calls_to(slack, "conversations.replies")
    assert "askflow: see" not in " ".join(c.content for c in index.chunks("slack:C1/1700000000.000100"))


def test_the_reconcile_is_one_run_in_n_by_the_runs_time():
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    at = dt.datetime(2024, 5, 6, tzinfo=dt.timezone.utc)
    hourly = [reconcile_due(at + n * hour, run_period=hour, every_runs=24) for n in range(72)]
    assert [n for n, due in enumerate(hourly) if due] == [0, 24, 48]  # the 00:00 UTC run
    assert reconcile_due(at + dt.timedelta(minutes=40), run_period=hour, every_runs=24)  # a late start is that run
    daily = [reconcile_due(at + n * day, run_period=day, every_runs=7) for n in range(21)]
    assert sum(daily) == 3 and daily[:7].count(True) == 1
    assert not any(reconcile_due(at + n * hour, run_period=hour, every_runs=0) for n in range(48))
    assert all(reconcile_due(at + n * hour, run_period=hour, every_runs=1) for n in range(48))


# -- GitHub --------------------------------------------------------------------------------------------------------
def test_github_issues_keep_state_labels_and_comments_and_skip_pull_requests(github):
    github.fail("/issues", 502)
    changes = read_repo_issues(github_client(github), "acme/pipes", stored={})
    documents = changes.documents
    assert [d.doc_id for d in documents] == ["github:acme/pipes/issues/1", "github:acme/pipes/issues/2"]
    fixed = documents[0]
    assert fixed.text.startswith("Issue #1 in acme/pipes — closed on 2024-03-10; labels: bug, scheduler")
    assert fixed.title == "#1 Scheduler crashes on DST change (closed on 2024-03-10)"
    assert "commenter0: Fixed in 2.8.1" in fixed.text
    assert fixed.metadata["state"] == "closed" and fixed.metadata["updated_at"] == "2024-03-10T12:00:00+00:00"
    assert fixed.metadata["labels"] == ["bug", "scheduler"] and fixed.metadata["closed_at"] == "2024-03-10"
    assert documents[1].metadata["state"] == "open" and documents[1].metadata["closed_at"] is None
    assert documents[1].title == "#2 Add pools to the UI (open)"
    assert fixed.url == "https://github.com/acme/pipes/issues/1"
    counts = github.counts()  # comments only where there are any; no issue fetched one by one, nor the repository
    assert counts["GET /repos/{repo}/issues/{number}/comments"] == 1
    assert counts["GET /repos/{repo}/issues/{number}"] == 0 and counts["GET /repos/{repo}"] == 0


def test_a_github_rerun_asks_with_since_and_reads_only_changed_issues(github):
    index = Index()
    index.repo(github)
    github.calls.clear()
    unchanged = index.repo(github)
    assert github.counts() == Counter({"GET /repos/{repo}/issues": 1}) and unchanged["documents_written"] == 0
    (listing,) = github.calls
    assert listing["query"]["since"] == "2024-04-01T00:00:00Z" and listing["query"]["sort"] == "updated"

    github.issues["acme/pipes"][1].update(updated_at="2024-06-01T00:00:00Z", comments=["Any news on pools?"])
    github.issues["acme/pipes"].append({"number": 4, "title": "Pools page 404", "body": "Broken link",
                                        "updated_at": "2024-06-02T00:00:00Z"})
    github.calls.clear()
    rerun = index.repo(github)
    assert rerun["documents_written"] == 2
    assert [c["path"] for c in github.calls if c["path"].endswith("/comments")] == \
        ["/repos/acme/pipes/issues/2/comments"]
    assert "Any news on pools?" in index.chunks("github:acme/pipes/issues/2")[0].content
    assert set(index.stored("github:")) == {f"github:acme/pipes/issues/{n}" for n in (1, 2, 4)}


def test_a_deleted_issue_is_pruned_at_the_reconcile(github):
    index = Index()
    index.repo(github)
    del github.issues["acme/pipes"][1]
    assert index.repo(github)["documents_pruned"] == 0  # since= cannot show a deleted issue
    github.calls.clear()
    reconcile = index.repo(github, full_sync=True)
    assert reconcile["documents_pruned"] == 1 and set(index.stored("github:")) == {"github:acme/pipes/issues/1"}
    assert "since" not in github.calls[0]["query"]
    assert not [c for c in github.calls if c["path"].endswith("/comments")]  # nothing unchanged is read again


def test_a_closed_issues_every_chunk_says_closed_on_its_date(github):
    body = "\n\n".join(f"Step {n}: the scheduler loop raised a traceback while parsing the DST offset table, "
                       f"and the run of the day was skipped." for n in range(12))
    github.issues["acme/pipes"][0]["body"] = body
    github.issues["acme/pipes"].append({"number": 5, "title": "Support cron seconds", "body": "Wontfix",
                                        "state": "closed", "state_reason": "not_planned",
                                        "closed_at": "2024-02-01T00:00:00Z"})
    index = Index(ChunkingStrategy(chunk_size=300, chunk_overlap=0))
    index.repo(github)
    chunks = index.chunks("github:acme/pipes/issues/1")
    assert len(chunks) >= 4
    assert all("closed on 2024-03-10" in c.title and "closed on 2024-03-10" in c.embedding_text for c in chunks)
    (wontfix,) = index.chunks("github:acme/pipes/issues/5")
    assert wontfix.title == "#5 Support cron seconds (closed as not planned on 2024-02-01)"


def test_old_closed_issues_are_skipped_per_the_setting(github):
    long_ago, lately = (NOW - dt.timedelta(days=400)).isoformat(), (NOW - dt.timedelta(days=5)).isoformat()
    github.issues["acme/pipes"] += [
        {"number": 6, "title": "Old bug", "body": "Fixed long ago", "state": "closed", "closed_at": long_ago,
         "updated_at": long_ago},
        {"number": 7, "title": "Recent bug", "body": "Fixed last week", "state": "closed", "closed_at": lately,
         "updated_at": lately}]
    unlimited = Index()
    unlimited.repo(github)
    assert {"github:acme/pipes/issues/6", "github:acme/pipes/issues/7"} <= set(unlimited.stored("github:"))
    rerun = unlimited.repo(github, closed_max_age_days=90)  # stored ones closed too long ago go, with no listing
    assert rerun["documents_pruned"] == 2  # #6 and #1 (closed in March 2024)
    assert set(unlimited.stored("github:")) == {f"github:acme/pipes/issues/{n}" for n in (2, 7)}

    fresh = Index()
    fresh.repo(github, closed_max_age_days=90)
    assert set(fresh.stored("github:")) == {f"github:acme/pipes/issues/{n}" for n in (2, 7)}


def test_gap_issues_are_skipped(github):
    gap = CoverageGap(key="catchup backfill", cluster=3, title="Catchup", askers=6, unanswered_share=0.8,
                      finding="Questions about catchup go unanswered.", closest_pages=[])
    github.issues["acme/pipes"].append({"number": 8, "title": "Docs gap: Catchup (6 questions)",
                                        "body": f"Questions about catchup go unanswered.\n\n{marker(gap)}",
                                        "labels": ["askflow-gap"], "updated_at": "2024-05-01T00:00:00Z"})
    index = Index()
    index.repo(github)
    assert set(index.stored("github:")) == {"github:acme/pipes/issues/1", "github:acme/pipes/issues/2"}


# -- the DAGs ------------------------------------------------------------------------------------------------------
def _embedding_calls(wire) -> int:
    return len([c for c in wire.calls if c["path"].endswith("/embeddings")])


@pytest.mark.airflow
def test_slack_dag_is_incremental_and_survives_a_flaky_api(airflow_env, pg_url, wire, slack, collection_name):
    env = dag_env(airflow_env, pg_url, wire, collection_name, slack_api_url=slack.base_url,
                  slack_bot_token="xoxb-test", slack_channels=["C1"], slack_reconcile_every_runs=0,
                  slack_reread_every_runs=0)  # no re-reads: the counts below are every run's
    store = PgVectorStore(url=pg_url, collection=collection_name)
    slack.fail("conversations.history", 429, {"Retry-After": "1"})
    slack.fail("auth.test", 503)
    assert run_dag("askflow_ingest_slack.py", {}, env) == "success"
    first = store.document_fingerprints("slack:")
    assert set(first) == {"slack:C1/1700000000.000100", "slack:C1/1700000100.000100"}

    wire.calls.clear()
    slack.calls.clear()
    assert run_dag("askflow_ingest_slack.py", {}, env) == "success"
    assert _embedding_calls(wire) == 0 and store.document_fingerprints("slack:") == first
    assert slack.counts() == Counter({"auth.test": 1, "conversations.history": 1, "conversations.info": 1})

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
                  github_repos=["acme/pipes"], github_reconcile_every_runs=0)
    store = PgVectorStore(url=pg_url, collection=collection_name)
    github.fail("/comments", 500, times=2)
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    first = store.document_fingerprints("github:")
    assert set(first) == {"github:acme/pipes/issues/1", "github:acme/pipes/issues/2"}
    assert store.document_metadata("github:acme/pipes/issues/1")["github:acme/pipes/issues/1"]["state"] == "closed"

    wire.calls.clear()
    github.calls.clear()
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    assert _embedding_calls(wire) == 0
    assert [c["query"].get("since") for c in github.calls if c["path"].endswith("/issues")] == \
        ["2024-04-01T00:00:00Z"]

    github.issues["acme/pipes"][1].update(state="closed", closed_at="2024-05-01T00:00:00Z",
                                          updated_at="2024-05-01T00:00:00Z")
    del github.issues["acme/pipes"][0]
    reconciling = {**env, "ASKFLOW_GITHUB_RECONCILE_EVERY_RUNS": "1"}  # every run lists every issue
    assert run_dag("askflow_ingest_github.py", {}, reconciling) == "success"
    after = store.document_fingerprints("github:")
    assert set(after) == {"github:acme/pipes/issues/2"}
    assert after["github:acme/pipes/issues/2"] != first["github:acme/pipes/issues/2"]
    store.close()
