"""Airflow knows the data flow: the DAGs' runs send OpenLineage events naming what they read and wrote (the
provider's HTTP transport, pointed at a loopback backend), and their tasks' asset events resolve the aliases the
asset graph draws."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.dag_runner import dag_env, run_dag
from tests.support.openlineage_collector import OpenLineageCollector
from tests.test_sources import github  # noqa: F401 (the loopback GitHub repository fixture)

DOCS = Path(__file__).parent / "data" / "docs"

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def lineage_backend():
    server = OpenLineageCollector()
    yield server
    server.stop()


def _datasets(event: dict, side: str) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in event.get(side, [])}


def test_the_docs_dag_names_its_location_as_input_and_its_collection_as_output(
        airflow_env, pg_url, wire, collection_name, tmp_path, lineage_backend):
    corpus = tmp_path / "docs"
    shutil.copytree(DOCS, corpus)
    env = dag_env({**airflow_env, "AIRFLOW__OPENLINEAGE__TRANSPORT": lineage_backend.transport(),
                   "AIRFLOW__OPENLINEAGE__NAMESPACE": "askflow-test"}, pg_url, wire, collection_name)
    conf = {"docs_location": str(corpus), "collection": collection_name, "batch_size": 2}

    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"

    location = ("file", str(corpus.resolve()))
    db = urlsplit(pg_url)  # OpenLineage's naming: postgres://HOST:PORT, DB.SCHEMA.TABLE (a socket's host: localhost)
    server = (db.hostname or "localhost") + (f":{db.port}" if db.port else "")
    collection = (f"postgres://{server}", f"{db.path.strip('/')}.public.{collection_name}")
    for task_id, runs in (("index", 2), ("prune", 1)):  # three files in batches of two; one prune
        events = lineage_backend.task_events("askflow_ingest_docs", task_id)
        by_type = {t: [e for e in events if e["eventType"] == t] for t in ("START", "COMPLETE")}
        assert [len(by_type["START"]), len(by_type["COMPLETE"])] == [runs, runs], events
        for event in by_type["START"] + by_type["COMPLETE"]:
            assert _datasets(event, "inputs") == {location}
            assert _datasets(event, "outputs") == {collection}
            assert event["job"]["namespace"] == "askflow-test"

    # the asset graph: the prune resolved the collection alias to the collection's asset, the location in its event
    with contextlib.closing(sqlite3.connect(Path(airflow_env["AIRFLOW_HOME"]) / "airflow.db")) as db:
        events = db.execute(
            "SELECT asset.name, asset.uri, asset_event.extra FROM asset_event JOIN asset ON asset.id = "
            "asset_event.asset_id WHERE source_dag_id = 'askflow_ingest_docs' AND asset.uri LIKE ?",
            (f"%/{collection_name}",)).fetchall()
        aliases = {row[0] for row in db.execute(
            "SELECT asset_alias.name FROM asset_alias JOIN asset_alias_asset ON asset_alias.id = alias_id "
            "JOIN asset ON asset.id = asset_id WHERE asset.uri LIKE ?", (f"%/{collection_name}",))}
    assert [(name, json.loads(extra)["location"]) for name, _, extra in events] == [
        (f"askflow collection {collection_name}", str(corpus))]
    assert aliases == {"askflow-collection"}


def test_the_github_dag_names_each_repository_as_the_input_of_its_mapped_task(
        airflow_env, pg_url, wire, github, collection_name, lineage_backend):  # noqa: F811
    env = dag_env({**airflow_env, "AIRFLOW__OPENLINEAGE__TRANSPORT": lineage_backend.transport(),
                   "AIRFLOW__OPENLINEAGE__NAMESPACE": "askflow-test"}, pg_url, wire, collection_name,
                  github_api_url=github.url, github_repos=["acme/pipes"], github_reconcile_every_runs=0)

    assert run_dag("askflow_ingest_github.py", {}, env) == "success"

    events = [e for e in lineage_backend.task_events("askflow_ingest_github", "index_item")
              if e["eventType"] in ("START", "COMPLETE") and collection_name in json.dumps(e["outputs"])]
    assert sorted(e["eventType"] for e in events) == ["COMPLETE", "START"]
    for event in events:  # the repository's issues on the API's host
        assert _datasets(event, "inputs") == {("https://127.0.0.1", "acme/pipes/issues")}
        assert [d["name"] for d in event["outputs"]] == [f"{urlsplit(pg_url).path.strip('/')}.public.{collection_name}"]
