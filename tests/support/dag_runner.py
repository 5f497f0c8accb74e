"""Run a DAG file with ``dag.test()`` in a fresh interpreter (Airflow reads its configuration at import)."""

from __future__ import annotations

from pathlib import Path

from askflow.dev import run_dag as runner

ROOT = Path(__file__).resolve().parents[2]


def run_dag(dag_file: str, conf: dict, env: dict[str, str]) -> str:
    run = runner.run_dag(ROOT / "dags" / dag_file, conf, env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return runner.state_of(run)


def dag_env(airflow_env: dict[str, str], pg_url: str, wire, collection: str, **overrides) -> dict[str, str]:
    """The Airflow environment plus askflow settings: pgvector at ``pg_url``, embeddings from the loopback server."""
    from askflow.config import Settings
    from askflow.dev.local_stack import settings_env

    settings = Settings(database_url=pg_url, collection=collection, embedding_provider="openai",
                        embedding_model="text-embedding-3-small", openai_base_url=wire.base_url,
                        openai_api_key="test-key", **overrides)
    return {**airflow_env, **settings_env(settings)}
