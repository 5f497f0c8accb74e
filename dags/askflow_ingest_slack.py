"""Ingest the threads of Slack channels (one document per thread, with its permalink), one mapped task per
channel; each channel's run prunes only that channel's deleted threads."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from askflow_dag_defaults import DEFAULT_ARGS, STRATEGY_PARAMS, strategy_from


@dag(
    dag_id="askflow_ingest_slack",
    schedule="@hourly",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["askflow", "ingestion"],
    params={"channels": Param(None, type=["null", "array"], description="channel ids; default from settings"),
            **STRATEGY_PARAMS},
)
def askflow_ingest_slack():
    @task
    def channels() -> list[str]:
        from askflow.config import Settings

        return get_current_context()["params"]["channels"] or Settings().slack_channels

    @task
    def index_channel(channel: str) -> dict:
        from askflow.ingest.pipeline import components_for, index_slack_channel

        params = get_current_context()["params"]
        components = components_for(params["collection"])
        try:
            return index_slack_channel(channel, components=components, strategy=strategy_from(params))
        finally:
            components.close()

    index_channel.expand(channel=channels())


dag = askflow_ingest_slack()
