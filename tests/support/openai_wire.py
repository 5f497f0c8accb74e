"""A loopback server that speaks the OpenAI wire format: chat completions, embeddings, and the Batch API (files and
batches).

Tests script it: a latency per call, a queue of injected failures (HTTP status codes, or "timeout" to hang past the
client's timeout), and a record of every call. Chat answers are derived from the prompt so they can be checked:
rewording requests (JSON mode) get three queries; answer requests cite the first two sources; a chunk's context
request gets a sentence naming its document and that document's opening words. A streamed answer (``stream: true``)
comes as server-sent chunks of one word each, ``token_interval_s`` apart; ``answer_sentences`` makes answers that
long; ``stream_cuts`` cuts the next streams off after that many chunks.

The Batch API as OpenAI serves it: ``POST /files`` (multipart, ``purpose=batch``) keeps a JSONL file,
``POST /batches`` makes a batch of it (``validating``), which each ``GET /batches/{id}`` moves on (``in_progress``,
then ``completed`` after ``batch_polls`` polls: every request answered as a chat completion, the replies in an output
file, the requests whose custom id is in ``batch_failing`` in an error file), ``GET /batches`` lists them newest
first and ``GET /files/{id}/content`` reads a file. ``batch_outcome = "failed"`` fails the next batch instead;
``batch_api = False`` answers 404 to all of it, as an endpoint without a Batch API (Ollama, vLLM) does.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import threading
import time
from email.parser import BytesParser
from email.policy import default as email_policy
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
        self.batch_api = True
        self.batch_polls = 2  # polls of a batch before it is completed
        self.batch_outcome = "completed"  # the next batch's end: "completed" or "failed"
        self.batch_failing: set[str] = set()  # custom ids whose requests fail (in the error file)
        self.batch_requests: list[dict] = []  # every request line of every batch run
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count(1)
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
            self.batch_api = True
            self.batch_polls = 2
            self.batch_outcome = "completed"
            self.batch_failing.clear()
            self.batch_requests.clear()
            self.files.clear()
            self.batches.clear()

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
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/files"):
                    if not wire.batch_api:
                        return self._send(404, {"error": {"message": "no such route"}})
                    return self._send(200, wire._upload(self.headers.get("Content-Type", ""), data))
                body = json.loads(data or b"{}")
                with wire._lock:
                    wire.calls.append({"path": self.path, "body": body})
                if self.path.endswith("/batches") and wire.batch_api:
                    return self._send(200, wire._create_batch(body))
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

            def do_GET(self):
                with wire._lock:
                    wire.calls.append({"path": self.path, "body": {}})
                path = self.path.split("?", 1)[0]
                found = re.fullmatch(r".*/(files|batches)/([\w-]+)(/content)?", path)
                if not wire.batch_api:
                    return self._send(404, {"error": {"message": "no such route"}})
                if path.endswith("/batches"):
                    listed = sorted(wire.batches.values(), key=lambda batch: batch["created_at"], reverse=True)
                    return self._send(200, {"object": "list", "data": listed, "has_more": False,
                                            "first_id": listed[0]["id"] if listed else None,
                                            "last_id": listed[-1]["id"] if listed else None})
                if found and found.group(1) == "batches" and found.group(2) in wire.batches:
                    return self._send(200, wire._poll(found.group(2)))
                if found and found.group(3) and found.group(2) in wire.files:
                    content = wire.files[found.group(2)]["content"]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                    return None
                return self._send(404, {"error": {"message": f"no such object: {path}"}})

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

    # -- the Batch API -----------------------------------------------------------------------------------------
    def _file(self, content: bytes, *, filename: str, purpose: str) -> dict:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = {"content": content}
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    def _upload(self, content_type: str, data: bytes) -> dict:
        """``POST /files``: the multipart form's ``file`` kept under a new id."""
        form = BytesParser(policy=email_policy).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + data)
        parts = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
        purpose = parts["purpose"].get_content().strip()
        with self._lock:
            self.calls.append({"path": "/v1/files", "body": {"purpose": purpose,
                                                            "filename": parts["file"].get_filename()}})
            return self._file(parts["file"].get_payload(decode=True), filename=parts["file"].get_filename(),
                              purpose=purpose)

    def _create_batch(self, body: dict) -> dict:
        with self._lock:
            now = int(time.time())
            batch = {"id": f"batch_{next(self._ids)}", "object": "batch", "endpoint": body["endpoint"],
                     "errors": None, "input_file_id": body["input_file_id"],
                     "completion_window": body["completion_window"], "status": "validating", "output_file_id": None,
                     "error_file_id": None, "created_at": now + len(self.batches), "expires_at": now + 86_400,
                     "request_counts": {"total": 0, "completed": 0, "failed": 0},
                     "metadata": body.get("metadata"), "polls": 0, "outcome": self.batch_outcome}
            self.batch_outcome = "completed"
            self.batches[batch["id"]] = batch
            return _public(batch)

    def _poll(self, batch_id: str) -> dict:
        """``GET /batches/{id}``: the batch one step further, run whole at its last step."""
        with self._lock:
            batch = self.batches[batch_id]
            if batch["status"] in ("validating", "in_progress"):
                batch["polls"] += 1
                batch["status"] = "in_progress"
            if batch["status"] == "in_progress" and batch["polls"] >= self.batch_polls:
                self._run(batch)
            return _public(batch)

    def _run(self, batch: dict) -> None:
        if batch["outcome"] == "failed":
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "injected: the batch failed", "line": 1}]})
            return
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].splitlines() if line]
        output, errors = [], []
        for n, line in enumerate(lines, 1):
            self.batch_requests.append(line)
            if line["custom_id"] in self.batch_failing:
                errors.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None, "response": {
                    "status_code": 500, "request_id": f"req_{n}",
                    "body": {"error": {"message": "injected", "type": "server_error"}}}})
                continue
            output.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None, "response": {
                "status_code": 200, "request_id": f"req_{n}", "body": _chat(line["body"])}})
        jsonl = lambda rows: "".join(json.dumps(row) + "\n" for row in rows).encode()  # noqa: E731
        batch.update(status="completed", completed_at=int(time.time()),
                     request_counts={"total": len(lines), "completed": len(output), "failed": len(errors)},
                     output_file_id=self._file(jsonl(output), filename="output.jsonl", purpose="batch_output")["id"]
                     if output else None,
                     error_file_id=self._file(jsonl(errors), filename="errors.jsonl", purpose="batch_output")["id"]
                     if errors else None)


def _public(batch: dict) -> dict:
    """A batch as the API shows it (without the loopback's own bookkeeping)."""
    return {key: value for key, value in batch.items() if key not in ("polls", "outcome")}


def _context(user: str) -> str:
    """A chunk's context: its document's title and the first words of the document's text."""
    document = re.search(r'<source kind="document"(?: title="([^"]*)")?>\n(.*?)\n</source>', user, flags=re.DOTALL)
    title = document.group(1) if document else ""
    opening = [line for line in document.group(2).splitlines() if line.strip() and not line.startswith("#")]
    words = " ".join(opening).split()[:12] if opening else []
    return f"This passage is part of the page {title}, which begins: {' '.join(words)}."


def _chat(body: dict, *, sentences: int = 1) -> dict:
    user = body["messages"][-1]["content"]
    system = body["messages"][0]["content"]
    if system.startswith("You place a passage of a document"):  # a chunk's context
        content = _context(user)
    elif '"questions": [{"id"' in system:  # synthetic training questions, one per passage
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
