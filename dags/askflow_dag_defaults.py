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
