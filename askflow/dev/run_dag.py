"""Run one DAG with ``dag.test()`` in this process and print its final state as JSON:
``python -m askflow.dev.run_dag DAG_FILE CONF_JSON``. Airflow reads its configuration at import, so each run is a
fresh interpreter (``run_dag`` starts one)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path


def command(dag_file: Path, conf: dict) -> list[str]:
    return [sys.executable, "-m", "askflow.dev.run_dag", str(dag_file), json.dumps(conf)]


def run_dag(dag_file: Path, conf: dict, env: dict[str, str], *, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """``dag_file`` run with ``conf`` in a new interpreter with ``env``; its last stdout line is
    ``{"state": ...}``."""
    return subprocess.run(command(dag_file, conf), env=env, capture_output=True, text=True, timeout=timeout_s)


def state_of(run: subprocess.CompletedProcess) -> str:
    return json.loads(run.stdout.strip().splitlines()[-1])["state"]


def main(dag_file: str, conf: str) -> None:
    sys.path.insert(0, str(Path(dag_file).resolve().parent))  # as Airflow puts dags/ on the path
    spec = importlib.util.spec_from_file_location("dag_under_test", dag_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test(run_conf=json.loads(conf))
    print(json.dumps({"state": str(run.state)}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
