"""Airflow DAG: ingest GitHub issues and their comments (state, labels and closed-at kept; a closed issue's every
passage says so), one mapped task per repository. Each run reads only the issues updated since the last one: it
starts at the watermark the last run left in an Airflow Variable (``WATERMARK``, per collection and repository: the
newest ``updated_at`` it listed, pull requests and skipped issues included), so pull requests that keep changing are
not listed again and again. One run in ``ASKFLOW_GITHUB_RECONCILE_EVERY_RUNS`` lists every issue (the reconcile)
and prunes the deleted ones."""

from __future__ import annotations

import datetime as dt

from askflow_dag_defaults import source_ingestion_dag

RUN_PERIOD = dt.timedelta(days=1)  # the schedule's: the reconcile is every N-th run of it
WATERMARK = "askflow_github_listed_until"  # the Variable's key: WATERMARK:<collection>:<owner/name>


def index_repo(repo: str, *, components, strategy) -> dict:
    from airflow.sdk import Variable, get_current_context

    from askflow.ingest.pipeline import index_github_repo, reconcile_due
    from askflow.ingest.provenance import airflow_run
    from askflow.ingest.sources.github_issues import repository_audiences

    settings = components.settings
    full_sync = reconcile_due(get_current_context()["dag_run"].run_after, run_period=RUN_PERIOD,
                              every_runs=settings.github_reconcile_every_runs)
    watermark = f"{WATERMARK}:{settings.collection}:{repo}"
    summary = index_github_repo(repo, client=components.github_client, store=components.store,
                                embeddings=components.embeddings, strategy=strategy,
                                answers_source=settings.answers_source, full_sync=full_sync,
                                closed_max_age_days=settings.github_closed_max_age_days,
                                gap_label=settings.github_gap_label, listed_until=Variable.get(watermark, None),
                                audiences=repository_audiences(components.github_client, repo,
                                                               settings.github_repo_audiences),
                                run=airflow_run(get_current_context()), requests=lambda: components.requests)
    if summary["listed_until"]:  # set once the run's writes are done: a failed run moves no watermark
        Variable.set(watermark, summary["listed_until"])
    return summary


def repo_asset(repo: str, settings):
    """A repository's issues, on the GitHub host the API serves (``github.com`` for ``api.github.com``)."""
    from urllib.parse import urlsplit

    from airflow.sdk import Asset

    host = urlsplit(settings.github_api_url).hostname or "github.com"
    return Asset(uri=f"https://{host.removeprefix('api.')}/{repo}/issues", name=f"github {repo} issues")


dag = source_ingestion_dag(
    dag_id="askflow_ingest_github", schedule="@daily", items_param="repos", setting="github_repos",
    index=index_repo, item_asset=repo_asset, doc=__doc__,
)
