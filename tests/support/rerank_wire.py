"""Loopback rerankers in the real wire formats: Cohere's ``POST /v1/rerank`` (``{"model", "query", "documents"}`` →
``{"results": [{"index", "relevance_score"}]}``) and the Vertex AI ranking API's ``POST
/v1/projects/P/locations/global/rankingConfigs/C:rank`` (``{"model", "query", "records": [{"id", "title",
"content"}]}`` → ``{"records": [{"id", "score"}]}``, best first).

Tests script them: ``prefer`` (words: a document holding an earlier one scores higher; one holding none scores
lowest, the documents' given order reversed among them, so that any reranked order is visibly not the fused one),
``delay_s`` (every call waits that long first), ``failures`` (status codes the next calls answer with), and a record
of every call (``calls``: path, headers and body).
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer


class RerankServer(LoopbackServer):
    def __init__(self) -> None:
        self.prefer: list[str] = []
        self.delay_s = 0.0
        self.failures: list[int] = []
        self.calls: list[dict] = []
        super().__init__()

    def scores(self, texts: list[str]) -> list[float]:
        """A score per text: ``prefer``'s earlier words first, then the given order reversed."""
        scores = []
        for position, text in enumerate(texts):
            words = [rank for rank, word in enumerate(self.prefer) if word.lower() in text.lower()]
            scores.append(1.0 - min(words) / (len(self.prefer) + 1) if words else position / (100 * len(texts)))
        return scores

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        raise NotImplementedError

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = None
                with server._lock:
                    server.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    failure = server.failures.pop(0) if server.failures else None
                time.sleep(server.delay_s)
                if failure is not None:
                    status, payload = failure, {"message": "injected failure"}
                elif not isinstance(body, dict):
                    status, payload = 400, {"message": "invalid request body"}
                else:
                    status, payload = server.answer(self.path, body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    pass

        return Handler


class CohereRerankServer(RerankServer):
    """Cohere's ``/v1/rerank``."""

    path = "/v1/rerank"

    @property
    def rerank_url(self) -> str:
        return self.url + self.path

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        if path != self.path:
            return 404, {"message": f"no route {path}"}
        documents = body.get("documents")
        if not isinstance(body.get("query"), str) or not isinstance(documents, list) or not documents:
            return 400, {"message": "query and a non-empty documents list are required"}
        texts = [d if isinstance(d, str) else d.get("text", "") for d in documents]
        ranked = sorted(enumerate(self.scores(texts)), key=lambda item: -item[1])
        return 200, {"id": "loopback", "results": [{"index": i, "relevance_score": s} for i, s in ranked],
                     "meta": {"billed_units": {"search_units": 1}}}


class VertexRankServer(RerankServer):
    """Discovery Engine's ``rankingConfigs.rank`` (v1) for ``project``'s ``default_ranking_config``."""

    def __init__(self, *, project: str = "askflow-test") -> None:
        self.project = project
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        expected = f"/v1/projects/{self.project}/locations/global/rankingConfigs/default_ranking_config:rank"
        if path != expected:
            return 404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}}
        records = body.get("records")
        if not isinstance(records, list) or not records or len(records) > 200 or any(
                not isinstance(r, dict) or not r.get("id") for r in records):
            return 400, {"error": {"code": 400, "message": "records: 1 to 200, each with an id",
                                   "status": "INVALID_ARGUMENT"}}
        texts = [f"{r.get('title', '')}\n{r.get('content', '')}" for r in records]
        ranked = sorted(zip(records, self.scores(texts), strict=True), key=lambda item: -item[1])
        return 200, {"records": [{"id": r["id"], "score": s} for r, s in ranked]}
