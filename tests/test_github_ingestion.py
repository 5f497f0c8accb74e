"""GitHub ingestion against the loopback GitHub API: askflow's own coverage-gap issues never come back as sources,
found by their label (``ASKFLOW_GITHUB_GAP_LABEL``) as well as by their marker; a closed issue names the pull request
that fixed it; the ``since=`` watermark moves past pull requests and skipped issues, also between DAG runs."""

from __future__ import annotations

import datetime as dt

import pytest

from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.ingest.chunking import ChunkingStrategy
from askflow.insights.model import CoverageGap, InsightsReport
from tests.support.dag_runner import dag_env, run_dag
from tests.support.loopback_apis import GitHubAPI
from tests.test_sources import Index, github  # noqa: F401 (github: the repository fixture)

ISSUES = {"github:acme/pipes/issues/1", "github:acme/pipes/issues/2"}
GAP_LABEL = "askflow-gap"  # the label askflow files its gap issues with, by default


def test_a_gap_issue_whose_marker_was_edited_away_is_still_skipped_by_its_label(github: GitHubAPI):  # noqa: F811
    github.issues["acme/pipes"].append({"number": 8, "title": "Docs gap: Catchup (6 questions)",
                                        "body": "Rewritten by a maintainer: catchup questions go unanswered.",
                                        "labels": [GAP_LABEL], "updated_at": "2024-05-01T00:00:00Z"})
    index = Index()
    index.repo(github, gap_label=GAP_LABEL)
    assert set(index.stored("github:")) == ISSUES


def test_the_gap_label_is_configured_and_a_stored_issue_labelled_so_is_pruned(github: GitHubAPI):  # noqa: F811
    index = Index()
    index.repo(github, gap_label="docs-gap")
    github.issues["acme/pipes"][1].update(labels=["docs-gap"], updated_at="2024-06-01T00:00:00Z")
    github.issues["acme/pipes"].append({"number": 9, "title": "Still a question", "body": "Labelled otherwise",
                                        "labels": [GAP_LABEL], "updated_at": "2024-06-02T00:00:00Z"})
    rerun = index.repo(github, gap_label="docs-gap")
    assert rerun["documents_pruned"] == 1
    assert set(index.stored("github:")) == {"github:acme/pipes/issues/1", "github:acme/pipes/issues/9"}


def test_the_gap_issues_askflow_files_carry_the_label_the_ingestion_skips(github: GitHubAPI):  # noqa: F811
    """One setting says both: the label ``gap_issues`` files with is the one the ingestion leaves out."""
    settings = Settings(github_api_url=github.url, github_token="ghp_test", insights_docs_repo="acme/pipes",
                        github_gap_label="docs-gap")
    at = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
    report = InsightsReport(report_id="r", period_start=at, period_end=at, built_at=at, requests=6, clustered=6,
                            noise=0, previous_requests=0, min_cluster_size=5, embedding_model="m", naming="terms",
                            low_confidence=0.35, gap_share=0.5, clusters=[], gaps=[])
    gap = CoverageGap(key="catchup backfill", cluster=3, title="Catchup", askers=6, unanswered_share=0.8,
                      finding="Questions about catchup go unanswered.", closest_pages=[])
    assert bootstrap(settings).gap_issues().file(gap, report=report) == "filed"
    filed = github.issues["acme/pipes"][-1]
    assert filed["labels"] == ["docs-gap"]
    filed.update(body="Rewritten by a maintainer, marker gone.", updated_at="2024-06-02T00:00:00Z")
    index = Index()
    index.repo(github, gap_label=settings.github_gap_label)
    assert set(index.stored("github:")) == ISSUES


def test_a_closed_issue_names_the_pull_request_that_fixed_it_in_every_chunk(github: GitHubAPI):  # noqa: F811
    issues = github.issues["acme/pipes"]
    issues[0].update(fixed_by=12, body="\n\n".join(f"Step {n}: the scheduler loop raised a traceback while parsing "
                                                   "the DST offset table." for n in range(12)))
    issues += [
        {"number": 12, "title": "Handle DST offsets in the scheduler loop", "body": "Fixes #1", "pull_request": True,
         "state": "closed", "closed_at": "2024-03-10T11:59:00Z", "updated_at": "2024-03-10T11:59:00Z"},
        {"number": 5, "title": "Question about pools", "body": "Answered", "state": "closed",
         "closed_at": "2024-02-01T00:00:00Z"},
        {"number": 6, "title": "Typo in the README", "body": "Fixed on main", "state": "closed",
         "closed_at": "2024-02-02T00:00:00Z", "closed_by_commit": "ab" * 20}]
    index = Index(ChunkingStrategy(chunk_size=300, chunk_overlap=0))
    index.repo(github)
    chunks = index.chunks("github:acme/pipes/issues/1")
    assert len(chunks) >= 3
    assert all("(closed on 2024-03-10, fixed by #12)" in c.title and "fixed by #12" in c.embedding_text
               for c in chunks)
    assert 'Fixed by pull request #12, "Handle DST offsets in the scheduler loop": ' \
        "https://github.com/acme/pipes/pull/12" in chunks[0].content
    assert chunks[0].metadata["fixed_by"] == {"repo": "acme/pipes", "number": 12,
                                              "url": "https://github.com/acme/pipes/pull/12"}
    for by_hand in ("github:acme/pipes/issues/5", "github:acme/pipes/issues/6"):  # a person, a commit pushed directly
        (chunk,) = index.chunks(by_hand)
        assert "fixed by" not in chunk.title and chunk.metadata["fixed_by"] is None
    counts = github.counts()  # the closed issues' events only, and a commit's pull requests only where one closed it
    assert counts["GET /repos/{repo}/issues/{number}/events"] == 3
    assert counts["GET /repos/{repo}/commits/{sha}/pulls"] == 2

    github.calls.clear()
    index.repo(github)
    assert not [call for call in github.calls if call["path"].endswith(("/events", "/pulls"))]


def _listings(api: GitHubAPI) -> list[dict]:
    return [call["query"] for call in api.calls if call["path"].endswith("/issues") and call["method"] == "GET"]


def test_the_since_watermark_moves_past_pull_requests_and_skipped_issues(github: GitHubAPI):  # noqa: F811
    """Only pull requests and a gap issue changed since the newest stored issue: the next listing starts after them,
    not at that issue again (which would list them all on every run)."""
    index = Index()
    first = index.repo(github)
    assert first["listed_until"] == "2024-04-01T00:00:00+00:00"
    github.issues["acme/pipes"] += [
        {"number": 20 + n, "title": f"Bump dependency {n}", "body": "chore", "pull_request": True,
         "updated_at": f"2024-07-{n + 1:02d}T00:00:00Z"} for n in range(5)]
    github.issues["acme/pipes"].append({"number": 30, "title": "Docs gap: pools", "body": "No marker left",
                                        "labels": ["askflow-gap"], "updated_at": "2024-07-09T00:00:00Z"})
    github.calls.clear()
    second = index.repo(github, gap_label="askflow-gap", listed_until=first["listed_until"])
    assert second["documents_written"] == 0 and second["listed"] == 7  # #2 (inclusive since), 5 PRs, the gap issue
    assert second["listed_until"] == "2024-07-09T00:00:00+00:00"

    github.calls.clear()
    third = index.repo(github, gap_label="askflow-gap", listed_until=second["listed_until"])
    assert [query["since"] for query in _listings(github)] == ["2024-07-09T00:00:00Z"]
    assert third["listed"] == 1 and third["listed_until"] == second["listed_until"]  # the watermark's own, again

    github.issues["acme/pipes"][1].update(updated_at="2024-08-01T00:00:00Z", body="Pools, now with a page")
    fourth = index.repo(github, gap_label="askflow-gap", listed_until=third["listed_until"])
    assert fourth["documents_written"] == 1 and fourth["listed_until"] == "2024-08-01T00:00:00+00:00"


def test_a_watermark_never_skips_what_an_emptied_store_lacks(github: GitHubAPI):  # noqa: F811
    index = Index()
    index.repo(github, listed_until="2030-01-01T00:00:00+00:00")  # left by a run into a store since wiped
    assert set(index.stored("github:")) == ISSUES


@pytest.mark.airflow
def test_the_github_dag_keeps_its_watermark_between_runs(airflow_env, pg_url, wire, github: GitHubAPI,  # noqa: F811
                                                          collection_name):
    env = dag_env(airflow_env, pg_url, wire, collection_name, github_api_url=github.url,
                  github_repos=["acme/pipes"], github_reconcile_every_runs=0)
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    github.issues["acme/pipes"].append({"number": 20, "title": "Bump dependency", "body": "chore",
                                        "pull_request": True, "updated_at": "2024-07-01T00:00:00Z"})
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    github.calls.clear()
    assert run_dag("askflow_ingest_github.py", {}, env) == "success"
    assert [query.get("since") for query in _listings(github)] == ["2024-07-01T00:00:00Z"]  # not 2024-04-01 again
