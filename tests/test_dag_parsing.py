"""The DAG files read no settings when Airflow parses them (every scheduler and worker parses them often, and
Composer's parse-time budget is short): a setting that would not even load leaves parsing untouched, and is read,
and refused, only when a task runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

DAGS = Path(__file__).parent.parent / "dags"

# Every DAG file, as Airflow's DAG processor parses it, with settings that would not load (one bad value each of
# the settings the DAGs use) and the training queue, the one value read at parse time (from the environment).
PARSE = """
import json, sys
from airflow.models.dagbag import DagBag
bag = DagBag(sys.argv[1])
dags = {d.dag_id: {"tasks": sorted(t.task_id for t in d.tasks),
                   "queues": {t.task_id: t.queue for t in d.tasks if t.queue != "default"},
                   "outlets": {t.task_id: sorted(o.name for o in t.outlets) for t in d.tasks if t.outlets},
                   "scheduled_on": repr(getattr(d.timetable, "asset_condition", None)),
                   "time_schedule": repr(getattr(d.timetable, "timetable", d.timetable))}
        for d in bag.dags.values()}
print(json.dumps({"errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()}, "dags": dags}))
"""

BROKEN = {"ASKFLOW_EVALUATION_BATCH_SIZE": "not-a-number", "ASKFLOW_FINETUNE_STEPS": "many",
          "ASKFLOW_INSIGHTS_MIN_CLUSTER_SIZE": "few", "ASKFLOW_VECTOR_STORE": "nowhere"}


def test_the_evaluation_dag_parses_with_settings_that_would_not_load():
    code = ("import sys; import askflow_evaluate as m; "
            "print(sorted(t.task_id for t in m.dag.tasks)); print('askflow.config' in sys.modules)")
    env = {**os.environ, "ASKFLOW_EVALUATION_BATCH_SIZE": "not-a-number", "PYTHONPATH": str(DAGS)}
    done = subprocess.run([sys.executable, "-c", code], cwd=DAGS, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tasks, imported = done.stdout.strip().splitlines()[-2:]
    assert tasks == str(["acknowledge", "grade", "pull_events", "save_grades", "write_back"])
    assert imported == "False"  # not even the settings module is imported at parse time


def test_every_dag_file_parses_with_settings_that_would_not_load(tmp_path):
    from askflow.config import load_settings
    from askflow.domain.errors import ConfigurationError

    env = {**os.environ, **BROKEN, "ASKFLOW_TRAINING_QUEUE": "training", "AIRFLOW_HOME": str(tmp_path),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS)}
    with mock.patch.dict(os.environ, BROKEN), pytest.raises(ConfigurationError):  # they really would not load
        load_settings()
    done = subprocess.run([sys.executable, "-c", PARSE, str(DAGS)], cwd=DAGS, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    dags = parsed["dags"]
    assert set(dags) == {"askflow_ingest_docs", "askflow_ingest_slack", "askflow_ingest_github", "askflow_evaluate",
                         "askflow_finetune_embeddings", "askflow_question_insights"}
    assert dags["askflow_finetune_embeddings"]["queues"] == {"train": "training"}
    # the data flow: each ingestion DAG and the evaluation DAG resolve the collection's alias, the evaluation DAG
    # the graded answers', which the insights DAG is scheduled on (with its weekly time)
    assert dags["askflow_ingest_docs"]["outlets"] == {"prune": ["askflow-collection"]}
    for source in ("askflow_ingest_slack", "askflow_ingest_github"):
        assert dags[source]["outlets"] == {"index_item": ["askflow-collection"]}
    assert dags["askflow_evaluate"]["outlets"] == {"write_back": ["askflow-collection"],
                                                   "save_grades": ["askflow-graded-answers"]}
    insights = dags["askflow_question_insights"]
    assert insights["scheduled_on"] == "AssetAlias(name='askflow-graded-answers', group='asset')"
    assert "expression='0 0 * * 0'" in insights["time_schedule"]
