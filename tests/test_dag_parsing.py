"""The DAG files read no settings when Airflow parses them (every scheduler and worker parses them often, and
Composer's parse-time budget is short): a setting that would not even load leaves parsing untouched, and is read,
and refused, only when a task runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).parent.parent / "dags"


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
