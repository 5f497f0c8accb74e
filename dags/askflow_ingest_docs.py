"""Ingest documentation (.md/.mdx/.rst/.html) from a folder into the vector store, incrementally.

Scheduled daily and runnable ad hoc; params choose the folder, the source name and the chunking strategy, so the
same corpus can be re-indexed with another strategy into another collection. Batches are mapped tasks that retry
on their own with exponential backoff; only relative paths go through XCom.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from askflow_dag_defaults import DEFAULT_ARGS, STRATEGY_PARAMS, strategy_from

@dag(
    dag_id="askflow_ingest_docs",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["askflow", "ingestion"],
    params={
        "docs_folder": Param("/home/airflow/gcs/data/docs", type="string", description="folder of documentation"),
        "source": Param("docs", type="string", pattern=r"^[a-z0-9_-]+$"),
        "base_url": Param(None, type=["null", "string"], description="URL prefix for source links"),
        **STRATEGY_PARAMS,
        "batch_size": Param(50, type="integer", minimum=1, maximum=1000),
    },
)
def askflow_ingest_docs():
    @task
    def list_batches() -> list[list[str]]:
        from askflow.ingest.pipeline import batches, list_documents

        params = get_current_context()["params"]
        return batches(list_documents(params["docs_folder"]), int(params["batch_size"]))

    @task
    def index(relative_paths: list[str]) -> dict:
        from askflow.ingest.pipeline import components_for, index_batch

        params = get_current_context()["params"]
        components = components_for(params["collection"])
        try:
            return index_batch(
                params["docs_folder"], relative_paths, components=components, strategy=strategy_from(params),
                source=params["source"], base_url=params["base_url"],
            )
        finally:
            components.close()

    @task(trigger_rule="none_failed")
    def prune(results: list[dict], listed: list[list[str]]) -> dict:
        from askflow.ingest.pipeline import components_for, prune_and_finalize

        params = get_current_context()["params"]
        components = components_for(params["collection"])
        try:
            summary = prune_and_finalize(
                [p for batch in listed for p in batch], components=components, source=params["source"]
            )
        finally:
            components.close()
        for key in ("documents_written", "documents_skipped", "chunks_written"):
            summary[key] = sum(r[key] for r in results)
        print(f"ingestion summary: {summary}")
        return summary

    listed = list_batches()
    prune(index.expand(relative_paths=listed), listed)


dag = askflow_ingest_docs()
