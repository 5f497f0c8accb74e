"""Run a DAG file with ``dag.test()`` in a fresh interpreter (Airflow reads its configuration at import)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("run_dag.py")


def run_dag(dag_file: str, conf: dict, env: dict[str, str]) -> str:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(ROOT / "dags" / dag_file), json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])["state"]


def dag_env(airflow_env: dict[str, str], pg_url: str, wire, collection: str, **overrides) -> dict[str, str]:
    """The Airflow environment plus askflow settings: pgvector at ``pg_url``, embeddings from the loopback server."""
    from askflow.config import Settings
    from askflow.dev.local_stack import settings_env

    settings = Settings(database_url=pg_url, collection=collection, embedding_provider="openai",
                        embedding_model="text-embedding-3-small", openai_base_url=wire.base_url,
                        openai_api_key="test-key", **overrides)
    return {**airflow_env, **settings_env(settings)}
