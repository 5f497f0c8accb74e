"""Airflow DAG: ingest GitHub issues and their comments (state, labels and closed-at kept), one mapped task per
repository; each repository's run prunes only that repository's deleted issues."""

from __future__ import annotations

from askflow_dag_defaults import source_ingestion_dag


def index_repo(repo: str, *, components, strategy) -> dict:
    from askflow.ingest.pipeline import index_github_repo

    return index_github_repo(repo, client=components.github_client, store=components.store,
                             embeddings=components.embeddings, strategy=strategy,
                             answers_source=components.settings.answers_source)


dag = source_ingestion_dag(
    dag_id="askflow_ingest_github", schedule="@daily", items_param="repos", setting="github_repos",
    index=index_repo, doc=__doc__,
)
