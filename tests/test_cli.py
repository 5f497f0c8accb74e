"""The ``askflow`` CLI as a user runs it: a subprocess with settings in its environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import forkserver

DOCS = Path(__file__).parent / "data" / "docs"


def askflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m askflow.entrypoints.cli *args`` with ``env`` over this process's environment: a process of its
    own, forked from the fork server that imported the heavy libraries once (tests/support/forkserver.py)."""
    return forkserver.run_module("askflow.entrypoints.cli", *args, env={**os.environ, **env}, timeout=300)


def test_ingest_then_ask_prints_answer_and_sources(pg_url, collection_name):
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    first = askflow("ingest", str(DOCS), env=env)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["documents_written"] == 3 and result["chunks_written"] >= 3

    again = askflow("ingest", str(DOCS), env=env)
    assert json.loads(again.stdout.strip().splitlines()[-1])["documents_skipped"] == 3

    answer = askflow("ask", "How do I set catchup to false?", env=env)
    assert answer.returncode == 0, answer.stderr
    assert "[1] Scheduling DAG runs" in answer.stdout
    assert "extractive mode" in answer.stdout


def test_a_page_kept_in_two_places_is_cited_once(pg_url, collection_name, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    (docs / "old").mkdir()
    shutil.copy(docs / "xcoms.rst", docs / "old" / "xcoms.rst")
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    assert askflow("ingest", str(docs), env=env).returncode == 0

    answer = askflow("ask", "How do I pull an XCom?", env=env)
    assert answer.returncode == 0, answer.stderr
    sources = [line for line in answer.stdout.splitlines() if line.startswith("  [")]
    assert sources[0].startswith("  [1] XComs")
    assert sum(" XComs" in line for line in sources) == 1, sources  # the copy in old/ is not cited again


def test_bad_input_gives_a_message_and_a_non_zero_exit(pg_url, collection_name, tmp_path):
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    missing = askflow("ingest", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    (tmp_path / "notes.txt").write_text("plain")
    wrong = askflow("ingest", str(tmp_path / "notes.txt"), env=env)
    assert wrong.returncode == 2 and "not a documentation file" in wrong.stderr
    no_repository = askflow("ingest", f"git+{(tmp_path / 'no-repo').as_uri()}@main", env=env)
    assert no_repository.returncode == 2 and "git: cannot fetch 'main'" in no_repository.stderr
    empty = askflow("ask", "  ", env=env)
    assert empty.returncode == 2 and "empty" in empty.stderr
    overlap = askflow("ingest", str(DOCS), "--chunk-size", "100", "--chunk-overlap", "200", env=env)
    assert overlap.returncode == 2 and "chunk_overlap" in overlap.stderr
    unknown = askflow("fly", env=env)
    assert unknown.returncode == 2


def test_an_empty_folder_never_prunes_a_whole_source_unasked(pg_url, collection_name, tmp_path):
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    assert askflow("ingest", str(DOCS), env=env).returncode == 0
    (tmp_path / "empty").mkdir()
    refused = askflow("ingest", str(tmp_path / "empty"), env=env)
    assert refused.returncode == 2 and "refusing to delete them all" in refused.stderr
    assert "--prune-all" in refused.stderr
    assert json.loads(askflow("ingest", str(DOCS), env=env).stdout.strip().splitlines()[-1])["documents_skipped"] == 3
    emptied = askflow("ingest", str(tmp_path / "empty"), "--prune-all", env=env)
    assert emptied.returncode == 0 and json.loads(emptied.stdout.strip().splitlines()[-1])["documents_pruned"] == 3


def test_gs_without_google_credentials_is_a_message_not_a_traceback(tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG")}
    result = subprocess.run([sys.executable, "-m", "askflow.entrypoints.cli", "ingest", "gs://a-bucket/docs/"],
                            capture_output=True, text=True, timeout=120,
                            env=env | {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
                                       "ASKFLOW_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("askflow: reading gs:// needs Google credentials")
    assert "Traceback" not in result.stderr


def test_eval_retrieval_prints_metrics_as_the_last_line(pg_url, collection_name, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"id": "q1", "question": "How do I pull an XCom?", "gold": ["xcoms.rst"]},
                {"id": "q2", "question": "Disable catchup for old intervals", "gold": ["scheduling.md"]},
                {"id": "q3", "question": "AIRFLOW_CONN environment variable URI", "gold": ["guides/connections.html"]},
            ]
        )
    )
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    details = tmp_path / "details.jsonl"
    run = askflow("eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions),
                  "--details", str(details), env=env)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["questions"] == 3
    assert set(summary) == {"questions", "hit@1", "hit@3", "hit@5", "hit@10", "mrr@10"}
    assert summary["hit@1"] == 1.0
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    assert [r["top10"][0] for r in rows] == ["xcoms.rst", "scheduling.md", "guides/connections.html"]

    questions.write_text('{"question": "no gold"}\n')
    bad = askflow("eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), env=env)
    assert bad.returncode == 2 and "gold" in bad.stderr


def test_a_bad_setting_is_named_with_its_choices_not_a_traceback():
    run = askflow("ask", "hi", env={"ASKFLOW_VECTOR_STORE": "milvus"})
    assert run.returncode == 2
    assert run.stderr.startswith("askflow: bad setting: ASKFLOW_VECTOR_STORE")
    assert "'pgvector' or 'weaviate'" in run.stderr and "Traceback" not in run.stderr
    not_json = askflow("ask", "hi", env={"ASKFLOW_SLACK_CHANNELS": "not json"})
    assert not_json.returncode == 2 and "ASKFLOW_SLACK_CHANNELS: not valid JSON" in not_json.stderr


def test_finetune_says_what_it_is_missing_before_it_trains(pg_url, collection_name, tmp_path):
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name, "ASKFLOW_DATA_DIR": str(tmp_path)}
    no_questions = askflow("finetune", "--corpus", str(DOCS), env=env)
    assert no_questions.returncode == 2 and "needs a question set" in no_questions.stderr
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "How do I pull an XCom?", "gold": ["xcoms.rst"]}\n')
    no_corpus = askflow("finetune", "--questions", str(questions), env=env)
    assert no_corpus.returncode == 2 and "needs --corpus" in no_corpus.stderr
    nothing_promoted = askflow("finetune", "--rollback", env=env)
    assert nothing_promoted.returncode == 2 and "nothing to roll back to" in nothing_promoted.stderr
    assert not (tmp_path / "models").exists()  # nothing was trained
