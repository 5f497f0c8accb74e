"""The DAGs under a real scheduler, the path Composer takes (``dag.test()`` is not): Airflow's API server, scheduler
and DAG processor started as ``askflow demo --airflow`` starts them (``askflow.dev.local_airflow``: an Airflow home
of the test's own, SQLite, LocalExecutor, free ports), the docs ingestion and the evaluation DAG triggered through
the REST API with the simple auth manager's token, both runs succeeding, and their OpenLineage events at a loopback
backend."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.config import Settings
from askflow.dev.local_airflow import airflow_env, start_airflow
from askflow.dev.local_stack import ensure_pull_subscription
from askflow.domain.messages import GradingDue
from tests.support.dag_runner import dag_env
from tests.support.openlineage_collector import OpenLineageCollector

DOCS = Path(__file__).parent / "data" / "docs"

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(400)]


def _api(airflow, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"{airflow.url}api/v2/{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _wait(condition, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(2)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def test_the_scheduler_runs_the_docs_and_evaluation_dags_triggered_through_the_rest_api(
        local_stack, pg_url, wire, collection_name, tmp_path):
    from google.cloud import pubsub_v1

    corpus = tmp_path / "docs"
    shutil.copytree(DOCS, corpus)
    suffix = uuid.uuid4().hex[:8]
    names = {"requests_collection": f"e2e_requests_{suffix}", "evaluation_topic": f"e2e-evaluation-{suffix}",
             "evaluation_subscription": f"e2e-evaluation-airflow-{suffix}"}
    settings = Settings(database_url=pg_url, collection=collection_name, **names)
    ensure_pull_subscription(settings, topic=settings.evaluation_topic, subscription=settings.evaluation_subscription)
    publisher = pubsub_v1.PublisherClient()  # an event for a request never stored: pulled, judged, acknowledged
    publisher.publish(publisher.topic_path(settings.project_id, settings.evaluation_topic),
                      GradingDue(request_id=f"gone-{suffix}", revision="1").model_dump_json().encode()).result(30)

    lineage = OpenLineageCollector()
    env = airflow_env(
        dag_env({**local_stack.env, **_process_env()}, pg_url, wire, collection_name, **names), tmp_path / "airflow",
        AIRFLOW__OPENLINEAGE__TRANSPORT=lineage.transport(), AIRFLOW__OPENLINEAGE__NAMESPACE="askflow-e2e",
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",  # only the runs the test triggers
        AIRFLOW__CORE__PARALLELISM="4")  # task processes at once, on two cores
    airflow = start_airflow(env, tmp_path / "logs")
    try:
        token = airflow.token()
        dag_ids = ("askflow_ingest_docs", "askflow_evaluate")
        _wait(lambda: all(d in {x["dag_id"] for x in _api(airflow, token, "GET", "dags?limit=100")["dags"]}
                          for d in dag_ids), timeout_s=120, what="the DAG processor parsed the DAGs")
        runs = {}
        for dag_id, conf in (("askflow_ingest_docs", {"docs_location": str(corpus), "collection": collection_name}),
                             ("askflow_evaluate", {})):
            _api(airflow, token, "PATCH", f"dags/{dag_id}", {"is_paused": False})
            runs[dag_id] = _api(airflow, token, "POST", f"dags/{dag_id}/dagRuns",
                                {"logical_date": None, "conf": conf})["dag_run_id"]

        def finished():
            states = {d: _api(airflow, token, "GET", f"dags/{d}/dagRuns/{r}")["state"] for d, r in runs.items()}
            return states if all(s in ("success", "failed") for s in states.values()) else None

        states = _wait(finished, timeout_s=240, what="both runs finished")
        assert states == {"askflow_ingest_docs": "success", "askflow_evaluate": "success"}, _logs(tmp_path)
    finally:
        airflow.stop()
        lineage.stop()

    store = PgVectorStore(url=pg_url, collection=collection_name)
    assert set(store.document_fingerprints("docs:")) == {"docs:xcoms.rst", "docs:scheduling.md",
                                                         "docs:guides/connections.html"}
    store.close()
    # the events: each task's START and COMPLETE, the docs DAG's with the folder in and the collection out, the
    # evaluation's pull with the subscription in, its write-back and grades with the requests in and the collection
    # and the requests out, and each DAG run's own (the scheduler's listener)
    prune = [e for e in lineage.task_events("askflow_ingest_docs", "prune") if e["eventType"] in ("START", "COMPLETE")]
    assert {e["eventType"] for e in prune} == {"START", "COMPLETE"}
    for event in prune:
        assert [d["name"] for d in event["inputs"]] == [str(corpus.resolve())]
        assert [d["name"].rsplit(".", 1)[-1] for d in event["outputs"]] == [collection_name]
    pull = [e for e in lineage.task_events("askflow_evaluate", "pull_events") if e["eventType"] == "COMPLETE"]
    assert [d["name"] for e in pull for d in e["inputs"]] == [
        f"subscription:{settings.project_id}:{settings.evaluation_subscription}"]
    requests = ("firestore://" + settings.project_id, settings.requests_collection)
    for task_id, outputs in (("write_back", collection_name), ("save_grades", settings.requests_collection)):
        (complete,) = [e for e in lineage.task_events("askflow_evaluate", task_id) if e["eventType"] == "COMPLETE"]
        assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [requests]
        assert [d["name"].rsplit(".", 1)[-1] for d in complete["outputs"]] == [outputs]
    for dag_id in runs:
        assert {"START", "COMPLETE"} <= {e["eventType"] for e in lineage.dag_events(dag_id)}, dag_id


def _process_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}


def _logs(tmp_path: Path) -> str:
    tails = []
    for log in sorted((tmp_path / "airflow" / "logs").rglob("*.log")) if (tmp_path / "airflow" / "logs").exists() \
            else []:
        text = log.read_text(errors="replace")
        if "Traceback" in text or "ERROR" in text:
            tails.append(f"--- {log}\n{text[-1500:]}")
    return "\n".join(tails[-4:])
