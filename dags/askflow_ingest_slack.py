"""Airflow DAG: ingest the threads of Slack channels (one document per thread, with its permalink), one mapped
task per channel; each channel's run prunes only that channel's deleted threads."""

from __future__ import annotations

from askflow_dag_defaults import source_ingestion_dag


def index_channel(channel: str, *, components, strategy) -> dict:
    from askflow.domain.errors import ConfigurationError
    from askflow.ingest.pipeline import index_slack_channel

    if components.slack_client is None:
        raise ConfigurationError("ASKFLOW_SLACK_BOT_TOKEN is needed to read Slack channels")
    return index_slack_channel(channel, client=components.slack_client, store=components.store,
                               embeddings=components.embeddings, strategy=strategy,
                               answers_source=components.settings.answers_source)


dag = source_ingestion_dag(
    dag_id="askflow_ingest_slack", schedule="@hourly", items_param="channels", setting="slack_channels",
    index=index_channel, doc=__doc__,
)
