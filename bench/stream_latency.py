"""Streamed answers: time to the first visible text and to the complete answer, through the local stack (POST
/requests, Pub/Sub push to the worker, GET /requests/{id} polled every 20 ms as the page's read path), with the
loopback OpenAI-wire server adding L = 500 ms before every model reply and streaming the answer a word every 20 ms.

Targets: first visible text ≤ reword time + first token (L) + 300 ms. Writes: the answer so far goes to the request's
progress subdocument at most once a second (``partial_write_interval_s``), and the request document itself takes
its claim, its heartbeats (one every third of the lease) and its outcome, so the grading trigger fires at most
3 + duration / (lease / 3) times per streamed answer, however long the stream: the bench counts those invocations
(the CloudEvents the Firestore emulator posts to its functions port, served here by a counter) and the partial
writes (≤ 1 + duration / 1 s). Prints one JSON object as its last line; progress on stderr.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _stack import docs_stack, get_json, post_json, summary_ms

from askflow.domain.model import RequestStatus

QUESTIONS = ["How do tasks pull an XCom value?", "How do I disable catchup?", "Where do connections come from?",
             "What is an XCom backend?", "How is a DAG scheduled?"]
LATENCY_S = 0.5
TOKEN_INTERVAL_S = 0.02
SENTENCES = 20  # 180 words: about 3.6 s of streaming


def ask_and_follow(api_url: str, question: str, *, poll_s: float = 0.02, timeout_s: float = 120) -> dict:
    """POST the question, then poll its record: when the first text showed, and when it completed."""
    started = time.perf_counter()
    request_id = post_json(f"{api_url}requests", {"question": question})["request_id"]
    first_text_ms = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = get_json(f"{api_url}requests/{request_id}")
        elapsed = (time.perf_counter() - started) * 1000
        if first_text_ms is None and (record.get("partial_answer") or record.get("answer")):
            first_text_ms = elapsed
        if RequestStatus(record["status"]).terminal:
            return {"record": record, "first_text_ms": first_text_ms, "complete_ms": elapsed}
        time.sleep(poll_s)
    raise TimeoutError(request_id)


class TriggerCounter:
    """Stands where the ``request_written`` function listens: counts the CloudEvents the Firestore emulator posts for
    each document (the invocations Eventarc would make), and answers 204."""

    def __init__(self, port: int) -> None:
        self.invocations: Counter[str] = Counter()
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                counter.invocations[(self.headers.get("ce-subject") or "").rsplit("/", 1)[-1]] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(requests: int = 15) -> dict:
    from google.cloud import firestore

    from askflow.dev.local_stack import register_firestore_trigger

    with docs_stack() as bench:
        wire, api_url, settings = bench.wire, bench.api_url, bench.settings
        triggers = TriggerCounter(bench.stack.trigger_port)
        register_firestore_trigger(bench.stack.url("firestore-emulator"), settings, "request_written")
        for _ in range(3):  # warm: model load, connection pools
            ask_and_follow(api_url, QUESTIONS[0])
        wire.latency_s, wire.token_interval_s, wire.answer_sentences = LATENCY_S, TOKEN_INTERVAL_S, SENTENCES
        store = firestore.Client(project=settings.project_id).collection(settings.requests_collection)
        pauses = random.Random(7)
        first, complete, margins, writes, write_bounds, invocations, invocation_bounds = [], [], [], [], [], [], []
        for i in range(requests):
            time.sleep(pauses.uniform(0, 0.1))  # out of step with the emulator's 100 ms push loop
            seen = ask_and_follow(api_url, QUESTIONS[i % len(QUESTIONS)])
            record = seen["record"]
            assert record["status"] == RequestStatus.COMPLETE and record["mode"] == "llm", record
            stored = store.document(record["request_id"]).get().to_dict()
            timings = record["timings_ms"]
            target = timings["reword_ms"] + LATENCY_S * 1000 + 300
            first.append(seen["first_text_ms"])
            complete.append(seen["complete_ms"])
            margins.append(target - seen["first_text_ms"])
            partial_writes = stored["partial_writes"]
            writes.append(partial_writes)
            write_bounds.append(1 + timings["total_ms"] / 1000 / settings.partial_write_interval_s)
            time.sleep(0.5)  # the emulator's last events arrive
            fired = triggers.invocations[record["request_id"]]
            invocations.append(fired)
            invocation_bounds.append(3 + timings["total_ms"] / 1000 / (settings.request_lease_s / 3))
            print(f"{i + 1}/{requests}: first text {seen['first_text_ms']:.0f} ms (target {target:.0f}), "
                  f"complete {seen['complete_ms']:.0f} ms, {partial_writes} partial writes, "
                  f"{fired} trigger invocations", file=sys.stderr)
        triggers.stop()
        return {
            "model_latency_ms": LATENCY_S * 1000, "token_interval_ms": TOKEN_INTERVAL_S * 1000,
            "answer_words": 9 * SENTENCES,
            "post_to_first_text": summary_ms(first),
            "post_to_complete": summary_ms(complete),
            "first_text_target_margin_ms": summary_ms(margins),
            "first_text_within_target": sum(m >= 0 for m in margins), "requests": requests,
            "partial_writes": {"max": max(writes), "mean": round(sum(writes) / len(writes), 1)},
            "partial_writes_within_bound": sum(w <= b for w, b in zip(writes, write_bounds, strict=True)),
            "trigger_invocations_per_answer": {"max": max(invocations),
                                               "mean": round(sum(invocations) / len(invocations), 1)},
            "trigger_invocations_within_bound": sum(
                n <= b for n, b in zip(invocations, invocation_bounds, strict=True)),
        }


if __name__ == "__main__":
    print(json.dumps(main()))
