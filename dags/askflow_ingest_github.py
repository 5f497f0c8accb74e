"""Ingest GitHub issues and their comments (state, labels and closed-at kept), one mapped task per repository;
each repository's run prunes only that repository's deleted issues."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from askflow_dag_defaults import DEFAULT_ARGS, STRATEGY_PARAMS, strategy_from


@dag(
    dag_id="askflow_ingest_github",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["askflow", "ingestion"],
    params={"repos": Param(None, type=["null", "array"], description="owner/name; default from settings"),
            **STRATEGY_PARAMS},
)
def askflow_ingest_github():
    @task
    def repos() -> list[str]:
        from askflow.config import Settings

        return get_current_context()["params"]["repos"] or Settings().github_repos

    @task
    def index_repo(repo: str) -> dict:
        from askflow.ingest.pipeline import components_for, index_github_repo

        params = get_current_context()["params"]
        components = components_for(params["collection"])
        try:
            return index_github_repo(repo, components=components, strategy=strategy_from(params))
        finally:
            components.close()

    index_repo.expand(repo=repos())


dag = askflow_ingest_github()
