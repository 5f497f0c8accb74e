"""``askflow demo``: the whole ask path on this machine, on the embedded defaults."""

from __future__ import annotations

import json
import time
import urllib.request

from askflow.bootstrap import bootstrap
from askflow.dev.local_stack import REPO_ROOT, LocalStack
from askflow.domain.model import RequestStatus
from askflow.entrypoints.answer_text import format_answer
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths

PROJECT_DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "docs"]


def ask_over_http(api_url: str, question: str, *, timeout_s: float = 300) -> dict:
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/requests",
        data=json.dumps({"question": question}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        request_id = json.load(response)["request_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/requests/{request_id}", timeout=30) as response:
            record = json.load(response)
        if RequestStatus(record["status"]).terminal:
            return record
        time.sleep(0.3)
    raise TimeoutError(f"request {request_id} not answered within {timeout_s:.0f}s")


def run_demo(*, question: str, wait: bool) -> int:
    with bootstrap() as components:
        return _run(components, question=question, wait=wait)


def _run(components, *, question: str, wait: bool) -> int:
    settings = components.settings
    stack = LocalStack(settings=settings, log_dir=settings.data_dir / "logs")
    try:
        print("starting the Firestore and Pub/Sub emulators ...", flush=True)
        stack.start_emulators()
        print(f"starting the embedded vector store and indexing {', '.join(p.name for p in PROJECT_DOCS)} ...",
              flush=True)
        documents = load_paths([p for p in PROJECT_DOCS if p.exists()], source="askflow")
        result = index_documents(
            documents, store=components.store, embeddings=components.embeddings,
            strategy=components.strategy(), source="askflow",
        )
        print(f"  {result.documents_seen} documents, {result.chunks_written} chunks written, "
              f"{result.documents_skipped} unchanged", flush=True)
        print("starting the functions under functions-framework ...", flush=True)
        api, worker = stack.start_functions()
        print(f"\nQ: {question}\n", flush=True)
        record = ask_over_http(api.url, question)
        if record["status"] != RequestStatus.COMPLETE.value:
            print(f"the request failed: {record.get('error')}")
            return 1
        print(format_answer(record))
        print("\nThe local stack is running:")
        print(f"  ask API          {api.url}requests")
        print(f"  answer worker    {worker.url}")
        print(f"  Firestore        {stack.env['FIRESTORE_EMULATOR_HOST']}")
        print(f"  Pub/Sub          {stack.env['PUBSUB_EMULATOR_HOST']}")
        print(f"  logs             {stack.log_dir}")
        if wait:
            print("\nPress Ctrl-C to stop.", flush=True)
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
