"""What are people asking: cluster the period's questions, describe each cluster, find the coverage gaps.

``build_report`` reads the period's requests from Firestore a page at a time, embeds the stand-alone questions
(reusing the embeddings the learning loop stored), clusters them with HDBSCAN, labels each cluster by its distinctive
words (and names it with the cheap model, when one is configured), and writes the report to Firestore (one per
period: a rerun replaces it) with its HTML and CSV renderings. Only the report's id and figures go through XCom.
Weekly, and after each evaluation run that saved grades (the ``askflow-graded-answers`` asset alias).
``file_gaps`` (param ``file_issues``, off by default) opens one GitHub issue per coverage gap in
``ASKFLOW_INSIGHTS_DOCS_REPO``, or updates the one filed before.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task

from askflow_dag_defaults import DEFAULT_ARGS
from askflow_lineage import GRADED_ANSWERS


@dag(
    dag_id="askflow_question_insights",
    # weekly, and after an evaluation run saved grades (the report of the hour it ran in, replaced by a later run
    # of the same hour): ratings graded just now count at once
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("@weekly", timezone="UTC"), assets=GRADED_ANSWERS),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["askflow", "insights"],
    params={
        "period": Param(None, type=["null", "string"], pattern=r"^\s*[0-9]{1,4}\s*[hdw]\s*$",
                        description="how far back from the period's end: 7d, 24h, 2w; unset: ASKFLOW_INSIGHTS_PERIOD"),
        "end": Param(None, type=["null", "string"], format="date-time", description=(
            "the period's end (ISO 8601); default: the run's data interval end, to the hour. A rerun for the same "
            "period replaces its report")),
        "min_cluster_size": Param(None, type=["null", "integer"], minimum=2, maximum=1000,
                                  description="unset: ASKFLOW_INSIGHTS_MIN_CLUSTER_SIZE"),
        "file_issues": Param(False, type="boolean", description=(
            "open (or update) one GitHub issue per coverage gap in ASKFLOW_INSIGHTS_DOCS_REPO")),
    },
)
def askflow_question_insights():
    @task
    def build_report() -> dict:
        from askflow.bootstrap import bootstrap
        from askflow.entrypoints import insights_steps

        context = get_current_context()
        params = context["params"]
        # a plain datetime (pendulum's does its arithmetic its own way); a run after an asset event may have no
        # data interval: then it is when it was due
        due = context.get("data_interval_end") or context["dag_run"].run_after
        end = (dt.datetime.fromisoformat(params["end"]) if params.get("end")
               else dt.datetime.fromtimestamp(due.timestamp(), tz=dt.UTC))
        with bootstrap() as components:
            report = insights_steps.build(components, period=params["period"] or components.settings.insights_period,
                                          end=end.replace(minute=0, second=0, microsecond=0),
                                          min_cluster_size=params["min_cluster_size"])
        return insights_steps.summary(report)

    @task.short_circuit
    def filing_wanted() -> bool:
        return bool(get_current_context()["params"]["file_issues"])

    @task
    def file_gaps(built: dict) -> dict:
        from askflow.bootstrap import bootstrap
        from askflow.entrypoints import insights_steps

        with bootstrap() as components:
            return insights_steps.file_gaps(components, built["report_id"])

    built = build_report()
    built >> filing_wanted() >> file_gaps(built)  # a failed build fails the run (no skipped leaf hides it)


dag = askflow_question_insights()
