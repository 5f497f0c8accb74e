"""``askflow demo``: the whole system on this machine, on the embedded defaults.

Everything Terraform deploys runs here: the API with the web page, the answer worker (Pub/Sub push), the Slack
webhook, the Firestore trigger that queues grading (registered with the emulator), and the requeue sweep, posted on
a schedule as Cloud Scheduler does. Grading runs as the evaluation DAG, for real: by default ``dag.test()`` of
``askflow_evaluate`` whenever grading events wait (so a 👍 on the page is graded and shows on the homepage); with
``--airflow``, Airflow itself (its API server, scheduler and DAG processor: ``askflow.dev.local_airflow``) with its
UI.

It indexes askflow's own docs, or with ``--docs FOLDER`` yours instead, into a collection of its own
(``ASKFLOW_DEMO_COLLECTION``), so ``askflow ingest`` experiments never leak into it; the collection holds one of
the two at a time. The admin pages need the admin key: ``ASKFLOW_API_KEY``, or one the demo makes for the run. It
prints its URLs, that key, and the exports that point ``askflow stats``, ``insights``, ``ask`` and ``ingest`` in
another shell at it. SIGTERM, SIGHUP and Ctrl-C stop every process it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from askflow.bootstrap import bootstrap
from askflow.config import load_settings
from askflow.dev.local_stack import REPO_ROOT, LocalStack, ensure_pull_subscription, settings_env
from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document, RequestStatus
from askflow.entrypoints.answer_text import format_answer
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import DOC_SUFFIXES, load_paths

PROJECT_DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "docs"]
SAMPLE_QUESTION = "How does askflow answer a question, and what happens when no LLM is configured?"
OWN_SOURCE, DOCS_SOURCE = "askflow", "docs"  # askflow's own docs, or --docs FOLDER's: the collection holds one
DAGS = REPO_ROOT / "dags"
REQUEUE_EVERY_S = 60.0  # Cloud Scheduler's requeue job runs every few minutes; the demo does it more often
GRADE_POLL_S = 10.0
RUNNING: set[subprocess.Popen] = set()  # the grading runs going on now: stopped with the demo


def ask_over_http(api_url: str, question: str, *, timeout_s: float = 300, api_key: str | None = None) -> dict:
    """Ask as the web page's user would (with ``api_key``, as a keyed caller: the deployment's own key)."""
    keyed = {"X-API-Key": api_key} if api_key else {}
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/requests",
        data=json.dumps({"question": question}).encode(),
        headers={"Content-Type": "application/json", **keyed},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        request_id = json.load(response)["request_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        read = urllib.request.Request(f"{api_url.rstrip('/')}/requests/{request_id}", headers=keyed)
        with urllib.request.urlopen(read, timeout=30) as response:
            record = json.load(response)
        if RequestStatus(record["status"]).terminal:
            return record
        time.sleep(0.3)
    raise TimeoutError(f"request {request_id} not answered within {timeout_s:.0f}s")


def run_demo(*, question: str | None, wait: bool, airflow: bool = False, docs: Path | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> int:
    """Run the demo on askflow's own docs, or on the folder ``docs``; ask ``question`` (default: a sample question
    about what was indexed); keep running while ``wait``. ``progress`` is told how the first indexing goes."""
    documents, source = demo_documents(docs)  # a wrong --docs fails here, before anything starts
    configured = load_settings()
    settings = configured.model_copy(update={
        "collection": configured.demo_collection, "learned_collection": f"{configured.demo_collection}_learned",
        "api_key": configured.api_key or SecretStr(secrets.token_urlsafe(24))})  # the admin pages' key
    own = source == OWN_SOURCE
    names = ", ".join(d.metadata.get("path", d.doc_id) for d in documents[:4]) + (", ..." if len(documents) > 4 else "")
    what = "askflow's own docs" if own else f"the docs in {docs.resolve()}"
    print(f"askflow demo: it indexes {what} ({len(documents)} files: {names}) into the collection "
          f"{settings.collection!r}.", flush=True)
    print("  Your own docs instead: askflow demo --docs FOLDER (its .md, .mdx, .rst and .html files)" if own else
          "  askflow's own docs instead: askflow demo, without --docs", flush=True)
    print("  More while it runs: askflow ingest LOCATION --source NAME, with the exports printed below", flush=True)
    question = question or (SAMPLE_QUESTION if own else f'What does "{documents[0].title}" cover?')
    with bootstrap(settings) as components:
        return _run(components, documents=documents, source=source, question=question, wait=wait, airflow=airflow,
                    progress=progress, key_made=configured.api_key is None)


def demo_documents(docs: Path | None) -> tuple[list[Document], str]:
    """What the demo indexes, and its source: askflow's own docs, or the documentation files in the folder ``docs``
    (``InvalidInput`` when it is missing, not a folder, or holds none)."""
    if docs is None:
        return load_paths([p for p in PROJECT_DOCS if p.exists()], source=OWN_SOURCE), OWN_SOURCE
    if not docs.is_dir():
        raise InvalidInput(f"--docs {docs}: {'not a folder' if docs.exists() else 'no such folder'}")
    documents = load_paths([docs], source=DOCS_SOURCE)
    if not documents:
        raise InvalidInput(f"--docs {docs}: no documentation files in it ({', '.join(DOC_SUFFIXES)})")
    return documents, DOCS_SOURCE


def demo_exports(settings, stack: LocalStack) -> dict[str, str]:
    """The environment that points another shell's ``askflow`` (``stats``, ``insights``, ``ask``, ``ingest``) at
    the running demo: its emulators, database, collections, embedding model and admin key."""
    return {**stack.env, "ASKFLOW_PROJECT_ID": settings.project_id, "ASKFLOW_DATA_DIR": str(settings.data_dir),
            "ASKFLOW_DATABASE_URL": settings.database_url, "ASKFLOW_COLLECTION": settings.collection,
            "ASKFLOW_LEARNED_COLLECTION": settings.learned_collection,
            "ASKFLOW_EMBEDDING_MODEL": settings.embedding_model, "ASKFLOW_API_KEY": settings.api_key.get_secret_value()}


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the demo as Ctrl-C does: through ``finally``, which stops every child."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def _index(components, documents: list[Document], *, source: str, progress) -> None:
    """Index ``documents`` as ``source``, and empty the demo's other source: the collection answers from one."""
    settings = components.settings
    other = DOCS_SOURCE if source == OWN_SOURCE else OWN_SOURCE
    index_documents([], store=components.store, embeddings=components.embeddings, strategy=components.strategy(),
                    source=other, allow_empty=True, answers_source=settings.answers_source)
    print(f"indexing {len(documents)} documents: what changed is embedded (the first run also unpacks and loads the "
          "embedding model) ...", flush=True)
    result = index_documents(documents, store=components.store, embeddings=components.embeddings,
                             strategy=components.strategy(), source=source, answers_source=settings.answers_source,
                             progress=progress)
    print(f"  {result.documents_seen} documents, {result.chunks_written} chunks written, "
          f"{result.documents_skipped} unchanged", flush=True)


def _run(components, *, documents: list[Document], source: str, question: str, wait: bool, airflow: bool,
         progress, key_made: bool) -> int:
    _stop_on_signals()
    if components.settings.database_url is None:
        print("starting the embedded PostgreSQL ...", flush=True)
    settings = components.settings.model_copy(update={"database_url": components.database_url})
    stack = LocalStack(settings=settings, log_dir=settings.data_dir / "logs")
    stop = threading.Event()
    try:
        print("starting the Firestore and Pub/Sub emulators ...", flush=True)
        stack.start_emulators()
        _index(components, documents, source=source, progress=progress)
        print("starting every function under functions-framework ...", flush=True)
        api, worker = stack.start_functions()
        slack = stack.start_slack()
        mcp = stack.start_mcp()
        trigger = stack.start_trigger()
        ensure_pull_subscription(settings, topic=settings.evaluation_topic,
                                 subscription=settings.evaluation_subscription)
        sweep = stack.start_requeue()
        threading.Thread(target=_sweep_on_schedule, args=(sweep.url, stop), daemon=True).start()
        airflow_env = _airflow_env(settings, stack)
        if airflow:
            ui = _start_airflow(stack, airflow_env)
        else:
            threading.Thread(target=_grade_when_due, args=(settings, airflow_env, stop), daemon=True).start()

        print(f"\n  askflow is running. Open the web page:  {api.url}\n", flush=True)
        print(f"Q: {question}\n", flush=True)
        key = settings.api_key.get_secret_value()
        record = ask_over_http(api.url, question, api_key=key)
        if record["status"] != RequestStatus.COMPLETE.value:
            print(f"the request failed: {record.get('error')}")
            return 1
        print(format_answer(record))
        print("\nThe local stack:")
        print(f"  web page and API     {api.url}  (JSON API under {api.url}requests, with the admin key as X-API-Key)")
        print(f"  answer worker        {worker.url}  (pushed by Pub/Sub)")
        print(f"  Slack webhook        {slack.url}  (set ASKFLOW_SLACK_BOT_TOKEN and ASKFLOW_SLACK_SIGNING_SECRET)")
        print(f"  MCP server           {mcp.url}mcp  (streamable HTTP: search, fetch, ask; e.g. "
              f'`claude mcp add --transport http askflow {mcp.url}mcp --header "X-API-Key: {key}"`)')
        print(f"  Firestore trigger    {trigger.url}  (queues grading when an answer is rated)")
        print(f"  requeue sweep        {sweep.url}  (posted every {REQUEUE_EVERY_S:.0f} s)")
        if airflow:
            print(f"  Airflow UI           {ui}  (user admin; password in {airflow_env['AIRFLOW_HOME']}/"
                  "simple_auth_manager_passwords.json.generated)")
        else:
            print(f"  grading              the askflow_evaluate DAG (dag.test()) within {GRADE_POLL_S:.0f} s of a "
                  "rating; `askflow demo --airflow` runs Airflow itself")
        print(f"  Firestore, Pub/Sub   {stack.env['FIRESTORE_EMULATOR_HOST']}, {stack.env['PUBSUB_EMULATOR_HOST']}")
        print(f"  logs                 {stack.log_dir}")
        print("\nThe admin pages (send the admin key as X-API-Key; the web page's session opens none of them):")
        print(f"  admin                {api.url}admin")
        print(f"  insights             {api.url}insights")
        print(f"  review queue         {api.url}admin/review")
        print(f"  admin key            {key}  ("
              + ("made for this run; set ASKFLOW_API_KEY to choose it)" if key_made else "ASKFLOW_API_KEY)"))
        print(f'  e.g.                 curl -H "X-API-Key: $ASKFLOW_API_KEY" {api.url}admin')
        print("\nIn another shell, these exports point askflow stats, askflow insights and askflow ask (and ingest) "
              "at this demo:")
        for name, value in demo_exports(settings, stack).items():
            print(f"  export {name}={shlex.quote(value)}")
        if wait:
            print("\nRate an answer on the web page: it is graded within a minute (the review queue and \"Recent good "
                  "answers\" show what came of it). Ctrl-C stops everything.", flush=True)
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop.set()
        print("stopping ...", file=sys.stderr, flush=True)
        for process in list(RUNNING):
            _kill_group(process)
        stack.stop()


def _sweep_on_schedule(url: str, stop: threading.Event) -> None:
    while not stop.wait(REQUEUE_EVERY_S):
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=60).close()
        except OSError as error:
            print(f"requeue sweep: {error}", file=sys.stderr, flush=True)


def _airflow_env(settings, stack: LocalStack) -> dict[str, str]:
    from askflow.dev.local_airflow import airflow_env

    return airflow_env({**os.environ, **stack.env, **settings_env(settings)}, settings.data_dir / "airflow-demo")


def _grade_when_due(settings, env: dict[str, str], stop: threading.Event) -> None:
    """Run the evaluation DAG whenever grading events wait on its subscription (looked at without taking them).
    A run still going when the demo stops is stopped with it."""
    from google.cloud import pubsub_v1

    from askflow.dev.run_dag import command, state_of

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        RUNNING.add(process)
        try:
            out, err = process.communicate(timeout=900)
        finally:
            RUNNING.discard(process)
        return subprocess.CompletedProcess(argv, process.returncode, out, err)

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(settings.project_id, settings.evaluation_subscription)
    migrated = False
    while not stop.wait(GRADE_POLL_S):
        try:
            waiting = subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
            if not waiting.received_messages:
                continue
            subscriber.modify_ack_deadline(request={"subscription": path, "ack_deadline_seconds": 0, "ack_ids": [
                m.ack_id for m in waiting.received_messages]})  # back to the queue, for the DAG to take
            if not migrated:
                print("grading: preparing Airflow's metadata database (once) ...", file=sys.stderr, flush=True)
                migration = run([sys.executable, "-m", "airflow", "db", "migrate"])
                if migration.returncode != 0:
                    raise RuntimeError(f"airflow db migrate failed: {migration.stderr[-500:]}")
                migrated = True
            graded = run(command(DAGS / "askflow_evaluate.py", {}))
            state = state_of(graded) if graded.returncode == 0 else f"error: {graded.stderr[-500:]}"
            print(f"grading: askflow_evaluate ran ({state})", file=sys.stderr, flush=True)
        except Exception as error:  # the demo keeps serving; the next poll tries again
            if not stop.is_set():
                print(f"grading: {error}", file=sys.stderr, flush=True)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s: a ``dag.test()`` run finishes its task on SIGTERM rather than stop."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
            return


def _start_airflow(stack: LocalStack, env: dict[str, str]) -> str:
    """Airflow's API server, scheduler and DAG processor (``askflow.dev.local_airflow``), stopped with the stack."""
    from askflow.dev.local_airflow import start_airflow

    print("starting Airflow (API server, scheduler, DAG processor) ...", flush=True)
    airflow = start_airflow(env, stack.log_dir)
    stack.services.extend(airflow.services)
    return airflow.url
