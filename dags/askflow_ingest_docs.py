"""Ingest documentation (.md/.mdx/.rst/.html) from a folder into the vector store, incrementally.

Scheduled daily and runnable ad hoc; params choose the folder, the source name and the chunking strategy, so the
same corpus can be re-indexed with another strategy into another collection. Batches are mapped tasks that retry
on their own with exponential backoff; only relative paths go through XCom.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}


def _components(params: dict):
    from askflow.bootstrap import bootstrap
    from askflow.config import Settings

    overrides = {"collection": params["collection"]} if params.get("collection") else {}
    return bootstrap(Settings(**overrides))


def _strategy(params: dict):
    from askflow.ingest.chunking import ChunkingStrategy

    return ChunkingStrategy(params["splitter"], int(params["chunk_size"]), int(params["chunk_overlap"]))


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
        "collection": Param(None, type=["null", "string"], description="collection; default from settings"),
        "splitter": Param("section", enum=["section", "recursive"]),
        "chunk_size": Param(1000, type="integer", minimum=200, maximum=8000),
        "chunk_overlap": Param(150, type="integer", minimum=0, maximum=2000),
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
        from askflow.ingest.pipeline import index_batch

        params = get_current_context()["params"]
        components = _components(params)
        try:
            return index_batch(
                params["docs_folder"], relative_paths, components=components, strategy=_strategy(params),
                source=params["source"], base_url=params["base_url"],
            )
        finally:
            components.close()

    @task(trigger_rule="none_failed")
    def prune(results: list[dict], listed: list[list[str]]) -> dict:
        from askflow.ingest.pipeline import prune_and_finalize

        params = get_current_context()["params"]
        components = _components(params)
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
