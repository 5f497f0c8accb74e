"""The DAGs run for real with ``dag.test()`` (Airflow 3, SQLite metadata DB) against pgvector and the loopback
OpenAI-wire embeddings server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from tests.support.dag_runner import dag_env, run_dag
from tests.support.git_repo import commit

DOCS = Path(__file__).parent / "data" / "docs"

pytestmark = pytest.mark.airflow


def test_docs_dag_ingests_skips_updates_and_prunes(airflow_env, pg_url, wire, collection_name, tmp_path):
    corpus = tmp_path / "docs"
    shutil.copytree(DOCS, corpus)
    env = dag_env(airflow_env, pg_url, wire, collection_name)
    conf = {"docs_location": str(corpus), "collection": collection_name, "batch_size": 2}
    store = PgVectorStore(url=pg_url, collection=collection_name)

    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    first = store.document_fingerprints("docs:")
    assert set(first) == {"docs:xcoms.rst", "docs:scheduling.md", "docs:guides/connections.html"}
    embedded_first = [c for c in wire.calls if c["path"].endswith("/embeddings")]
    assert embedded_first

    wire.calls.clear()
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    assert not [c for c in wire.calls if c["path"].endswith("/embeddings")]  # unchanged corpus: nothing embedded
    assert store.document_fingerprints("docs:") == first

    (corpus / "xcoms.rst").write_text((corpus / "xcoms.rst").read_text() + "\nXCom values are pickled no more.\n")
    (corpus / "guides" / "connections.html").unlink()
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    after = store.document_fingerprints("docs:")
    assert set(after) == {"docs:xcoms.rst", "docs:scheduling.md"}
    assert after["docs:xcoms.rst"] != first["docs:xcoms.rst"]
    assert after["docs:scheduling.md"] == first["docs:scheduling.md"]

    empty = tmp_path / "empty"  # a wrong path or an unmounted folder: the run fails and nothing is deleted
    empty.mkdir()
    assert run_dag("askflow_ingest_docs.py", conf | {"docs_location": str(empty)}, env) == "failed"
    assert store.document_fingerprints("docs:") == after
    assert run_dag("askflow_ingest_docs.py", conf | {"docs_location": str(empty), "prune_all": True}, env) == "success"
    assert store.document_fingerprints("docs:") == {}
    store.close()


def test_docs_dag_reads_a_git_repository_and_a_gcs_prefix(airflow_env, pg_url, wire, collection_name, git_docs,
                                                          gcs_server):
    from google.cloud import storage

    env = {**dag_env(airflow_env, pg_url, wire, collection_name), "STORAGE_EMULATOR_HOST": gcs_server.url}
    store = PgVectorStore(url=pg_url, collection=collection_name)

    (git_docs / "docs" / "scheduling.md").unlink()
    head = commit(git_docs, "drop a page")  # the DAG reads the branch as it is now
    conf = {"docs_location": f"git+{git_docs.as_uri()}@main#subdirectory=docs", "source": "handbook",
            "collection": collection_name, "batch_size": 1}
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    assert set(store.document_fingerprints("handbook:")) == {"handbook:xcoms.rst", "handbook:guides/connections.html"}
    assert {hit.chunk.url for hit in store.keyword_search("XCom push pull", limit=20, audiences=None)
            if hit.chunk.doc_id == "handbook:xcoms.rst"} == {f"{git_docs.as_uri()}@{head}#docs/xcoms.rst"}

    bucket = storage.Client().create_bucket(f"docs-{collection_name.replace('_', '-')}")
    bucket.blob("guides/scheduling.md").upload_from_filename(DOCS / "scheduling.md")
    conf = {"docs_location": f"gs://{bucket.name}/guides", "source": "site", "collection": collection_name}
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    assert set(store.document_fingerprints("site:")) == {"site:scheduling.md"}
    assert len(store.document_fingerprints("handbook:")) == 2  # another source's run prunes nothing of this one
    store.close()
