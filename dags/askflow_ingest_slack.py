"""Airflow DAG: ingest the threads of Slack channels (one document per thread, with its permalink), one mapped
task per channel. Each run reads only the threads new or moved since the last one and prunes only that channel's
deleted threads; one run in ``ASKFLOW_SLACK_RECONCILE_EVERY_RUNS`` lists the whole history (the reconcile). Each run
also reads again the replies of one in ``ASKFLOW_SLACK_REREAD_EVERY_RUNS`` of the threads it lists, for edits: a run
takes the turn of its number, a reconcile that of its own count as well, so that the threads only reconciles list
(older than the reply window) get their turns too."""

from __future__ import annotations

import datetime as dt

from askflow_dag_defaults import source_ingestion_dag

RUN_PERIOD = dt.timedelta(hours=1)  # the schedule's: the reconcile is every N-th run of it


def index_channel(channel: str, *, components, strategy) -> dict:
    from airflow.sdk import get_current_context

    from askflow.domain.errors import ConfigurationError
    from askflow.ingest.pipeline import index_slack_channel, reconcile_due, run_number
    from askflow.ingest.provenance import airflow_run

    if components.slack_client is None:
        raise ConfigurationError("ASKFLOW_SLACK_BOT_TOKEN is needed to read Slack channels")
    settings = components.settings
    at = get_current_context()["dag_run"].run_after
    full_sync = reconcile_due(at, run_period=RUN_PERIOD, every_runs=settings.slack_reconcile_every_runs)
    run = run_number(at, run_period=RUN_PERIOD)
    turns = (run, run // settings.slack_reconcile_every_runs) if full_sync else (run,)
    return index_slack_channel(channel, client=components.slack_client, store=components.store,
                               embeddings=components.embeddings, strategy=strategy,
                               answers_source=settings.answers_source,
                               reply_window_s=settings.slack_reply_window_days * 86_400, full_sync=full_sync,
                               app_id=settings.slack_app_id, reread_every=settings.slack_reread_every_runs,
                               reread_turns=turns,
                               audiences=components.slack_audiences.channel_readers(channel),
                               run=airflow_run(get_current_context()), requests=lambda: components.requests)


def channel_asset(channel: str, settings):
    """A channel's threads, by the link Slack resolves in any workspace the reader belongs to."""
    from airflow.sdk import Asset

    return Asset(uri=f"https://slack.com/archives/{channel}", name=f"slack channel {channel}")


dag = source_ingestion_dag(
    dag_id="askflow_ingest_slack", schedule="@hourly", items_param="channels", setting="slack_channels",
    index=index_channel, item_asset=channel_asset, doc=__doc__,
)
