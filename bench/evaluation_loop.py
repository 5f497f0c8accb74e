"""Evaluation loop: N evaluation events (each delivered twice) graded in batches of B against the real Firestore
emulator and pgvector, with the loopback OpenAI-wire server as the cheap model. Reports the grading calls made
(must be ⌈N/B⌉), events/second end to end (read, grade, write the grade, store good answers) and the same for the
heuristic grader (no model configured). Prints one JSON object as its last line."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from _stack import temp_data_dir

from askflow.domain.model import RequestStatus


def main(n: int = 200, batch_sizes: tuple[int, ...] = (1, 10, 20, 50)) -> dict:
    data_dir = temp_data_dir()
    os.environ["ASKFLOW_DATA_DIR"] = str(data_dir)
    from google.cloud import firestore

    from askflow.bootstrap import bootstrap
    from askflow.config import Settings
    from askflow.dev.local_stack import LocalStack
    from askflow.domain.clock import utcnow
    from askflow.domain.messages import GradingDue
    from askflow.service_layer.evaluation import grade_events
    from tests.support.openai_wire import OpenAIWireServer

    wire = OpenAIWireServer().start()
    base = Settings(project_id="askflow-bench", collection="bench_answers", openai_base_url=wire.base_url,
                    openai_api_key="bench", cheap_model="bench-cheap", embedding_provider="openai",
                    embedding_model="text-embedding-3-small")
    stack = LocalStack(settings=base, log_dir=data_dir / "logs")
    results: dict = {"events": n, "delivered": 2 * n, "runs": []}
    try:
        stack.start_emulators()
        client = firestore.Client(project=base.project_id)
        for mode, batch_size in [("llm", b) for b in batch_sizes] + [("heuristic", max(batch_sizes))]:
            settings = base.model_copy(update={"requests_collection": f"requests_{mode}_{batch_size}"})
            if mode == "heuristic":
                settings = settings.model_copy(update={"openai_base_url": None, "openai_api_key": None})
            components = bootstrap(settings)
            now = utcnow()
            writes = client.bulk_writer()
            for i in range(n):
                writes.set(client.collection(settings.requests_collection).document(f"r{i}"), {
                    "request_id": f"r{i}", "question": f"How do I size pool number {i} for my backfills?",
                    "status": RequestStatus.COMPLETE.value, "created_at": now,
                    "answer": f"Give pool {i} enough slots for the backfill [1].",
                    "sources": [{"n": 1, "doc_id": "docs:pools.rst", "title": "Pools", "url": "https://x/pools"}],
                    "ratings": {"web-u": {"positive": i % 3 != 0, "at": now}},
                })
            writes.close()
            events = [GradingDue(request_id=f"r{i}", revision="seen") for i in range(n)] * 2  # each delivered twice
            wire.calls.clear()
            started = time.perf_counter()
            c = components
            run = grade_events(events, requests=c.requests, runs=c.evaluation_runs, store=c.store,
                               embeddings=c.embeddings, grader=c.grader, strategy=c.strategy(),
                               answers_source=settings.answers_source, answers_base_url=settings.answers_base_url,
                               batch_size=batch_size)
            seconds = time.perf_counter() - started
            grading_calls = sum(1 for c in wire.calls if c["path"].endswith("/chat/completions"))
            results["runs"].append({
                "grader": run.method, "batch_size": batch_size, "graded": run.graded,
                "good": run.good, "grading_calls": grading_calls, "expected_calls":
                math.ceil(n / batch_size) if mode == "llm" else 0, "tokens": run.tokens,
                "seconds": round(seconds, 2), "events_per_s": round(2 * n / seconds, 1),
                "requests_graded_per_s": round(run.graded / seconds, 1),
            })
            components.close()
        results["calls_match_ceil_n_over_b"] = all(r["grading_calls"] == r["expected_calls"] for r in results["runs"])
    finally:
        stack.stop()
        wire.stop()
    return results


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)))
