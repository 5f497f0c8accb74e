"""What the askflow DAGs share: retry policy, the chunking-strategy params, the components of a run, and the DAG
shape of a source ingested item by item (not a DAG itself)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from airflow.sdk import Param

from askflow.config import SPLITTERS

# Every task that touches a network retries with exponential backoff.
DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": dt.timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=5),
}

STRATEGY_PARAMS = {
    "collection": Param(None, type=["null", "string"], description="collection; default from settings"),
    "splitter": Param(SPLITTERS[0], enum=list(SPLITTERS)),
    "chunk_size": Param(1000, type="integer", minimum=200, maximum=8000),
    "chunk_overlap": Param(150, type="integer", minimum=0, maximum=2000),
}


def components_for(params: dict):
    """The components of a task (``with components_for(params) as components:``), writing to the params'
    collection when one is given (another chunking experiment)."""
    from askflow.bootstrap import bootstrap
    from askflow.config import load_settings

    return bootstrap(load_settings(**({"collection": params["collection"]} if params.get("collection") else {})))


def strategy_from(params: dict, components):
    return components.strategy(splitter=params["splitter"], chunk_size=int(params["chunk_size"]),
                               chunk_overlap=int(params["chunk_overlap"]))


def source_ingestion_dag(*, dag_id: str, schedule: str, items_param: str, setting: str,
                         index: Callable[..., dict], item_asset: Callable[..., Any], doc: str):
    """A DAG with one mapped task per item of a source (Slack channel, GitHub repository).

    :param items_param: the param listing the items; empty means the ``setting`` of askflow's settings.
    :param index: ``index(item, components=..., strategy=...)`` indexes one item and returns its summary.
    :param item_asset: ``item_asset(item, settings)``: the item as a dataset, the input of its task's lineage
        (``askflow_lineage``); the output is the collection, whose alias each task resolves once it wrote.
    """
    import pendulum
    from airflow.sdk import dag, get_current_context, task

    from askflow_lineage import COLLECTION, collection_asset, lineage_task, wrote

    def lineage(context) -> tuple[list, list]:
        with components_for(context["params"]) as components:
            return ([item_asset(context["task"].op_kwargs["item"], components.settings)],
                    [collection_asset(components.settings, components.serving().collection)])

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
            from askflow.config import load_settings

            return get_current_context()["params"][items_param] or getattr(load_settings(), setting)

        @lineage_task(lineage=lineage, outlets=[COLLECTION])
        def index_item(item: str) -> dict:
            params = get_current_context()["params"]
            with components_for(params) as components:
                summary = index(item, components=components, strategy=strategy_from(params, components))
                wrote(COLLECTION, collection_asset(components.settings, components.serving().collection),
                      location=item_asset(item, components.settings).uri,
                      documents_written=summary.get("documents_written"), chunks_written=summary.get("chunks_written"))
            return summary

        index_item.expand(item=items())

    return source_ingestion()
