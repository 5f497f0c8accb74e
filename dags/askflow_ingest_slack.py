"""Airflow DAG: ingest the threads of Slack channels (one document per thread, with its permalink), one mapped
task per channel; each channel's run prunes only that channel's deleted threads."""

from __future__ import annotations

from askflow_dag_defaults import source_ingestion_dag

dag = source_ingestion_dag(
    dag_id="askflow_ingest_slack", schedule="@hourly", items_param="channels", setting="slack_channels",
    index="index_slack_channel", doc=__doc__,
)
