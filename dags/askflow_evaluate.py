"""Drain the evaluation queue, grade the answers in batches, re-ingest good answers, write the grades.

One task, one effect: ``grade`` judges (writing nothing), ``write_back`` indexes good answers and learns every
verdict (idempotent: deterministic ids, records upserted by request id), ``save_grades`` writes the grades last,
since their ``graded_revision`` is what makes a later event skip a request, and ``acknowledge`` acks the messages.
A task that fails is retried alone and repeats nothing; one killed before the grades are saved leaves the events
unacknowledged, and the next run grades them again. The sensor pulls without acknowledging. The deferrable sensor is
not used: its trigger acknowledges as it pulls, so a failed grading run would lose events.
"""

from __future__ import annotations

import base64
import datetime as dt

import pendulum
from airflow.providers.google.cloud.hooks.pubsub import PubSubHook
from airflow.providers.google.cloud.sensors.pubsub import PubSubPullSensor
from airflow.sdk import Param, dag, get_current_context, task

from askflow_lineage import (
    COLLECTION,
    GRADED_ANSWERS,
    collection_asset,
    lineage_task,
    ol_dataset,
    requests_asset,
    subscription_asset,
    wrote,
)


def compact_messages(messages, context) -> list[dict]:
    """Keep what the grading needs in XCom: the ack id and the event (a request id and a revision), parsed here
    once; a malformed one is ``None``."""
    from pydantic import ValidationError

    from askflow.domain.messages import GradingDue

    compact = []
    for received in messages:
        data = received.message.data
        try:
            event = GradingDue.model_validate_json(base64.b64decode(data) if isinstance(data, str) else data)
        except (ValidationError, ValueError):
            event = None
        compact.append({"ack_id": received.ack_id, "event": event.model_dump() if event else None})
    return compact


class SettingsPullSensor(PubSubPullSensor):
    """``PubSubPullSensor`` whose message count is templated too, so it is read from the settings at run time."""

    template_fields = (*PubSubPullSensor.template_fields, "max_messages")

    def poke(self, context) -> bool:
        self.max_messages = int(self.max_messages)
        return super().poke(context)

    def _operator_lineage(self):
        from airflow.providers.openlineage.extractors import OperatorLineage

        from askflow.config import load_settings

        return OperatorLineage(inputs=[ol_dataset(subscription_asset(load_settings()))])

    def get_openlineage_facets_on_start(self):
        return self._operator_lineage()

    def get_openlineage_facets_on_complete(self, task_instance):
        return self._operator_lineage()


def _write_back_lineage(context) -> tuple[list, list]:
    """The answers judged (the requests) and the collection good answers are indexed into."""
    from askflow.bootstrap import bootstrap

    with bootstrap() as c:
        return [requests_asset(c.settings)], [collection_asset(c.settings, c.serving().collection)]


def _grades_lineage(context) -> tuple[list, list]:
    """The requests read and their grades written (the graded answers)."""
    from askflow.config import load_settings

    settings = load_settings()
    return [requests_asset(settings)], [requests_asset(settings)]


def askflow_setting(name: str):
    """A setting, read when a task runs (a template macro: ``{{ askflow_setting('evaluation_subscription') }}``),
    never when the scheduler parses this file."""
    from askflow.config import load_settings

    return getattr(load_settings(), name)


@dag(
    dag_id="askflow_evaluate",
    schedule=dt.timedelta(minutes=15),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30), "retry_exponential_backoff": True},
    tags=["askflow", "evaluation"],
    params={"batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=1000,
                                description="answers per grading call (unset: ASKFLOW_EVALUATION_BATCH_SIZE)")},
    user_defined_macros={"askflow_setting": askflow_setting},
)
def askflow_evaluate():
    pull = SettingsPullSensor(
        task_id="pull_events",
        project_id="{{ askflow_setting('project_id') }}",
        subscription="{{ askflow_setting('evaluation_subscription') }}",
        max_messages="{{ askflow_setting('evaluation_max_messages') }}",
        ack_messages=False,
        messages_callback=compact_messages,
        deferrable=False,
        poke_interval=5,
        timeout=120,
        soft_fail=True,
    )

    @task
    def grade(pulled: list[dict]) -> dict:
        """Judge what is due; writes nothing (a retry grades again)."""
        from askflow.bootstrap import bootstrap
        from askflow.domain.messages import GradingDue
        from askflow.service_layer.evaluation import judge

        with bootstrap() as c:
            batch_size = get_current_context()["params"].get("batch_size") or c.settings.evaluation_batch_size
            events = [GradingDue(**m["event"]) for m in pulled if m["event"]]
            run, verdicts, again = judge(
                events, requests=c.requests, grader=c.grader, batch_size=int(batch_size), prices=c.prices,
                review_cap=c.settings.review_queue_per_asker, attempts=c.settings.grading_attempts)
        return {"run": run.model_dump(mode="json"), "verdicts": [v.model_dump(mode="json") for v in verdicts],
                "again": [event.model_dump(mode="json") for event in again]}

    @lineage_task(lineage=_write_back_lineage, outlets=[COLLECTION])
    def write_back(judged: dict) -> dict:
        """Good answers indexed as sources, rejected ones removed, every verdict learned: idempotent, so a retry
        repeats nothing."""
        from askflow.bootstrap import bootstrap
        from askflow.service_layer.evaluation import Verdict, apply_verdicts

        with bootstrap() as c:
            apply_verdicts([Verdict.model_validate(v) for v in judged["verdicts"]], requests=c.requests,
                           store=c.store, embeddings=c.embeddings, strategy=c.strategy(),
                           answers_source=c.settings.answers_source, answers_base_url=c.settings.answer_pages,
                           signals=c.signals, collection=c.serving().collection)
            if judged["verdicts"]:  # an asset event only when something was judged
                wrote(COLLECTION, collection_asset(c.settings, c.serving().collection),
                      location=requests_asset(c.settings).uri, verdicts=len(judged["verdicts"]))
        return judged

    @lineage_task(lineage=_grades_lineage, outlets=[GRADED_ANSWERS])
    def save_grades(judged: dict, pulled: list[dict]) -> list[str]:
        """The grades last: they mark each request graded at its revision. What the judge gave no grade is queued
        again (its next attempt), before its event is acknowledged."""
        from askflow.bootstrap import bootstrap
        from askflow.domain.clock import utcnow
        from askflow.domain.messages import GradingDue
        from askflow.domain.model import EvaluationRun
        from askflow.service_layer.evaluation import Verdict, save_verdicts

        with bootstrap() as c:
            save_verdicts([Verdict.model_validate(v) for v in judged["verdicts"]], requests=c.requests)
            for event in judged.get("again", []):
                c.events.publish(c.settings.evaluation_topic, GradingDue.model_validate(event))
            run = EvaluationRun.model_validate(judged["run"]).model_copy(update={"finished_at": utcnow()})
            c.evaluation_runs.save(run)
            if judged["verdicts"]:  # the insights DAG runs after this event: only when grades were saved
                wrote(GRADED_ANSWERS, requests_asset(c.settings), graded=len(judged["verdicts"]),
                      subscription=subscription_asset(c.settings).uri)
        print(f"evaluation summary: {run.model_dump(mode='json')}")
        return [m["ack_id"] for m in pulled]  # malformed events are acknowledged too: they can never succeed

    @task
    def acknowledge(ack_ids: list[str]) -> int:
        if ack_ids:
            PubSubHook().acknowledge(subscription=askflow_setting("evaluation_subscription"),
                                     project_id=askflow_setting("project_id"), ack_ids=ack_ids)
        return len(ack_ids)

    acknowledge(save_grades(write_back(grade(pull.output)), pull.output))


dag = askflow_evaluate()
