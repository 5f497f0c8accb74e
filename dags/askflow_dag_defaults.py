"""What the askflow DAGs share: retry policy and the chunking-strategy params (not a DAG itself)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param

# Every task that touches a network retries with exponential backoff.
DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}

STRATEGY_PARAMS = {
    "collection": Param(None, type=["null", "string"], description="collection; default from settings"),
    "splitter": Param("section", enum=["section", "recursive"]),
    "chunk_size": Param(1000, type="integer", minimum=200, maximum=8000),
    "chunk_overlap": Param(150, type="integer", minimum=0, maximum=2000),
}


def strategy_from(params: dict):
    from askflow.ingest.chunking import ChunkingStrategy

    return ChunkingStrategy(params["splitter"], int(params["chunk_size"]), int(params["chunk_overlap"]))


def source_ingestion_dag(*, dag_id: str, schedule: str, items_param: str, setting: str, index: str, doc: str):
    """A DAG with one mapped task per item of a source (Slack channel, GitHub repository).

    :param items_param: the param listing the items; empty means the ``setting`` of askflow's settings.
    :param index: the name of the ``askflow.ingest.pipeline`` function that indexes one item.
    """
    import pendulum
    from airflow.sdk import dag, get_current_context, task

    @dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["askflow", "ingestion"],
        params={items_param: Param(None, type=["null", "array"], description=f"default: settings.{setting}"),
                **STRATEGY_PARAMS},
        doc_md=doc,
    )
    def source_ingestion():
        @task
        def items() -> list[str]:
            from askflow.config import Settings

            return get_current_context()["params"][items_param] or getattr(Settings(), setting)

        @task
        def index_item(item: str) -> dict:
            from askflow.ingest import pipeline

            params = get_current_context()["params"]
            components = pipeline.components_for(params["collection"])
            try:
                return getattr(pipeline, index)(item, components=components, strategy=strategy_from(params))
            finally:
                components.close()

        index_item.expand(item=items())

    return source_ingestion()
