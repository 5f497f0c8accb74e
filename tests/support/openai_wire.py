"""A loopback server that speaks the OpenAI wire format: chat completions and embeddings.

Tests script it: a latency per call, a queue of injected failures (HTTP status codes, or "timeout" to hang past the
client's timeout), and a record of every call. Chat answers are derived from the prompt so they can be checked:
rewording requests (JSON mode) get three queries; answer requests cite the first two sources. A streamed answer
(``stream: true``) comes as server-sent chunks of one word each, ``token_interval_s`` apart; ``answer_sentences``
makes answers that long; ``stream_cuts`` cuts the next streams off after that many chunks.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAIWireServer:
    def __init__(self) -> None:
        self.latency_s = 0.0
        self.failures: list[int | str] = []
        self.fail_ratio_every: int = 0  # fail one call in N (0: never), with 429/500 alternating
        self.calls: list[dict] = []
        self.timeout_hang_s = 5.0
        self.token_interval_s = 0.0
        self.answer_sentences = 1
        self.stream_cuts: list[int] = []  # the next streams break off after this many chunks, one entry per stream
        self._lock = threading.Lock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> OpenAIWireServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.latency_s = 0.0
            self.failures.clear()
            self.fail_ratio_every = 0
            self.token_interval_s = 0.0
            self.answer_sentences = 1
            self.stream_cuts.clear()
            self.calls.clear()
            self._counter = 0

    def _next_failure(self) -> int | str | None:
        with self._lock:
            self._counter += 1
            if self.failures:
                return self.failures.pop(0)
            if self.fail_ratio_every and self._counter % self.fail_ratio_every == 0:
                return 429 if (self._counter // self.fail_ratio_every) % 2 else 500
            return None

    def _handler(self):
        wire = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with wire._lock:
                    wire.calls.append({"path": self.path, "body": body})
                if wire.latency_s:
                    time.sleep(wire.latency_s)
                failure = wire._next_failure()
                if failure == "timeout":
                    time.sleep(wire.timeout_hang_s)
                    return self._send(500, {"error": {"message": "hung"}})
                if failure is not None:
                    return self._send(failure, {"error": {"message": "injected", "type": "injected"}})
                if self.path.endswith("/chat/completions") and body.get("stream"):
                    return self._stream(_chat(body, sentences=wire.answer_sentences))
                if self.path.endswith("/chat/completions"):
                    return self._send(200, _chat(body, sentences=wire.answer_sentences))
                if self.path.endswith("/embeddings"):
                    return self._send(200, _embeddings(body))
                return self._send(404, {"error": {"message": "no such route"}})

            def _stream(self, completion: dict):
                """The completion as OpenAI streams it: a chunk per word, then one with the usage, then [DONE]."""
                with wire._lock:
                    cut = wire.stream_cuts.pop(0) if wire.stream_cuts else None
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = re.findall(r"\S+\s*", completion["choices"][0]["message"]["content"])
                base = {key: completion[key] for key in ("id", "created", "model")}
                base["object"] = "chat.completion.chunk"
                for i, word in enumerate(words):
                    if cut is not None and i == cut:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-stream
                        return
                    if i and wire.token_interval_s:
                        time.sleep(wire.token_interval_s)
                    delta = {"content": word} | ({"role": "assistant"} if i == 0 else {})
                    self._event(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                self._event(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                self._event(base | {"choices": [], "usage": completion["usage"]})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, payload: dict):
                self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _chat(body: dict, *, sentences: int = 1) -> dict:
    user = body["messages"][-1]["content"]
    system = body["messages"][0]["content"]
    if '"questions": [{"id"' in system:  # synthetic training questions, one per passage
        passages = json.loads(user)["passages"]
        content = json.dumps({"questions": [
            {"id": p["id"], "question": f"How does this work: {p['passage'].splitlines()[0][:80]}?"} for p in passages
        ]})
    elif '"grades"' in system:
        items = json.loads(user)["items"]
        content = json.dumps({"grades": [
            {"id": item["id"], "helpfulness": 4, "relevance": 4, "public": True, "reason": "loopback grade"}
            for item in items
        ]})
    elif body.get("response_format", {}).get("type") == "json_object":
        question = user.split("Question:", 1)[-1].strip().splitlines()[0][:200]
        content = json.dumps({"queries": [f"{question} overview", f"how to {question}", f"{question} example"]})
    else:
        numbers = re.findall(r'^<source n="(\d+)"', user, flags=re.MULTILINE)  # the fenced sources' numbers
        cites = "".join(f"[{n}]" for n in numbers[:2]) or ""
        content = " ".join([f"According to the documentation, this is how it works {cites}."] * sentences)
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": len(content) // 4,
                  "total_tokens": (len(user) + len(content)) // 4},
    }


def _embeddings(body: dict) -> dict:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    for i, text in enumerate(inputs):
        digest = hashlib.sha256(text.encode()).digest()
        vector = [(b - 128) / 128 for b in digest] * 48  # 1536 dimensions
        data.append({"object": "embedding", "index": i, "embedding": vector})
    return {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
