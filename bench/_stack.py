"""What the benchmarks share: the local stack with indexed test docs and the loopback OpenAI-wire server."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from askflow.domain.model import RequestStatus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOCS = ROOT / "tests" / "data" / "docs"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 1)


def summary_ms(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
            "mean_ms": round(statistics.fmean(values), 1)}


def post_json(url: str, payload: dict, *, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"} | ({"X-Asker-Token": token} if token else {})
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def rate(api_url: str, request_id: str, payload: dict, *, token: str) -> dict:
    """Rate as the asker: ``token`` is the one the question was asked with."""
    return post_json(f"{api_url}requests/{request_id}/feedback", payload, token=token)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def ask_and_wait(api_url: str, question: str, *, poll_s: float = 0.01, timeout_s: float = 120,
                 token: str | None = None) -> tuple[dict, float]:
    started = time.perf_counter()
    request_id = post_json(f"{api_url}requests", {"question": question}, token=token)["request_id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = get_json(f"{api_url}requests/{request_id}")
        if RequestStatus(record["status"]).terminal:
            return record, (time.perf_counter() - started) * 1000
        time.sleep(poll_s)
    raise TimeoutError(request_id)


def temp_data_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="askflow-bench-"))


@dataclass
class DocsStack:
    api_url: str
    wire: Any  # the loopback OpenAI-wire server: its latency, token pace and calls
    settings: Any
    stack: Any


@contextlib.contextmanager
def docs_stack(**settings: Any) -> Iterator[DocsStack]:
    """The local stack (emulators, the API and the answer worker) answering from the indexed test docs, with the
    loopback OpenAI-wire server as its models and all-MiniLM-L6-v2 as its embeddings (the faster offline model, as
    in every earlier run of these benches: its query embedding stands in for a hosted one)."""
    data_dir = temp_data_dir()
    os.environ["ASKFLOW_DATA_DIR"] = str(data_dir)
    from askflow.adapters.local_embeddings import MINILM
    from askflow.bootstrap import bootstrap
    from askflow.config import Settings
    from askflow.dev.local_stack import LocalStack
    from askflow.ingest.indexing import index_documents
    from askflow.ingest.sources.files import load_paths
    from tests.support.openai_wire import OpenAIWireServer

    wire = OpenAIWireServer().start()
    configured = Settings(**{
        "project_id": "askflow-bench", "collection": "bench_docs", "openai_base_url": wire.base_url,
        "openai_api_key": "bench", "cheap_model": "bench-cheap", "strong_model": "bench-strong",
        "embedding_model": MINILM, **settings})
    with bootstrap(configured) as components:
        index_documents(load_paths([DOCS]), store=components.store, embeddings=components.embeddings,
                        strategy=components.strategy(), source="docs")
        configured = configured.model_copy(update={"database_url": components.database_url})
        stack = LocalStack(settings=configured, log_dir=data_dir / "logs")
        try:
            stack.start_emulators()
            api, _ = stack.start_functions(configured)
            yield DocsStack(api_url=api.url, wire=wire, settings=configured, stack=stack)
        finally:
            stack.stop()
            wire.stop()
