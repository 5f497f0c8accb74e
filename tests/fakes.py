"""In-memory fakes of the ports, for fast unit tests of the handlers and the grading loop. They keep the ports'
promises (a claim refuses a live lease, a finish refuses a terminal state) by the ``Request``'s own rules; the
integration suite runs the real adapters on the emulators and Postgres."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from askflow.domain.clock import utcnow
from askflow.domain.errors import Duplicate
from askflow.domain.messages import Message
from askflow.domain.model import Chunk, EvaluationRun, Graded, Rating, Request, RequestStatus, ScoredChunk
from askflow.ports import Embeddings, EvaluationRuns, EventBus, RequestStore, VectorStore
from askflow.retrieval.fusion import weighted_rrf


class FakeRequestStore(RequestStore):
    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}

    def create(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise Duplicate(f"request {request.request_id} exists")
        self.requests[request.request_id] = request

    def get(self, request_id: str) -> Request | None:
        return self.requests.get(request_id)

    def claim(self, request_id: str, *, lease_s: float) -> Request | None:
        request, now = self.requests.get(request_id), utcnow()
        if request is None or not request.claimable(now, lease_s):
            return None
        self.requests[request_id] = request.claimed(now)
        return self.requests[request_id]

    def finish(self, request: Request) -> bool:
        stored = self.requests.get(request.request_id)
        if stored is None or stored.terminal:
            return False
        outcome = {field: getattr(request, field) for field in Request.OUTCOME_FIELDS}
        self.requests[request.request_id] = stored.model_copy(update=outcome | {"updated_at": utcnow()})
        return True

    def unfinished(self, *, updated_before, limit: int) -> list[Request]:
        def changed(request: Request):
            return request.updated_at or request.created_at

        waiting = [r for r in self.requests.values() if not r.terminal and changed(r) < updated_before]
        return sorted(waiting, key=changed)[:limit]

    def thread_history(self, thread_id: str, *, before, limit: int = 4) -> list[tuple[str, str]]:
        turns = sorted((r for r in self.requests.values() if r.thread_id == thread_id and r.created_at < before
                        and r.status is RequestStatus.COMPLETE), key=lambda r: r.created_at)
        return [(r.question, r.answer or "") for r in turns[-limit:]]

    def mark_requeued(self, request_id: str, *, at) -> None:
        self.requests[request_id] = self.requests[request_id].model_copy(update={"updated_at": at, "requeued_at": at})

    def save_grade(self, request_id: str, graded: Graded) -> None:
        self.requests[request_id] = self.requests[request_id].model_copy(update=dict(graded))

    def rate(self, request_id: str, rater: str, rating: Rating) -> Request | None:
        request = self.requests.get(request_id)
        if request is not None and request.status is RequestStatus.COMPLETE:
            request = request.model_copy(update={"ratings": request.ratings | {rater: rating}, "rated_at": rating.at})
            self.requests[request_id] = request
        return request

    def recent_good(self, limit: int) -> list[Request]:
        good = [r for r in self.requests.values() if r.is_good]
        return sorted(good, key=lambda r: r.created_at, reverse=True)[:limit]


class FakeEvaluationRuns(EvaluationRuns):
    def __init__(self) -> None:
        self.runs: list[EvaluationRun] = []

    def save(self, run: EvaluationRun) -> None:
        self.runs.append(run)


class FakeEventBus(EventBus):
    """Keeps what was published; ``failing`` makes every publish raise, as an unreachable Pub/Sub would."""

    def __init__(self, *, failing: bool = False) -> None:
        self.published: list[tuple[str, Message]] = []
        self.failing = failing

    def publish(self, topic: str, message: Message, **attributes: str) -> str:
        if self.failing:
            raise ConnectionError("Pub/Sub is unreachable")
        self.published.append((topic, message))
        return str(len(self.published))


class FakeVectorStore(VectorStore):
    """Chunks in a dict; keyword search counts shared words, vector search is a dot product."""

    def __init__(self) -> None:
        self.stored: dict[str, tuple[Chunk, list[float]]] = {}
        self.finalized = 0

    def ensure_collection(self, dimension: int) -> None:
        pass

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        for chunk, vector in zip(chunks, vectors, strict=True):
            self.stored[chunk.chunk_id] = (chunk, list(vector))
        return len(chunks)

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        gone = [cid for cid, (chunk, _) in self.stored.items() if chunk.doc_id in set(doc_ids)]
        for cid in gone:
            del self.stored[cid]
        return len(gone)

    def document_fingerprints(self, prefix: str) -> dict[str, str]:
        return {c.doc_id: c.sha for c, _ in self.stored.values() if c.doc_id.startswith(prefix)}

    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return {c.doc_id: c.sha for c, _ in self.stored.values() if c.doc_id in set(doc_ids)}

    def document_metadata(self, prefix: str) -> dict[str, dict]:
        return {c.doc_id: c.metadata for c, _ in sorted(self.stored.values(), key=lambda cv: -cv[0].index)
                if c.doc_id.startswith(prefix)}

    def keyword_search(self, text: str, *, limit: int) -> list[ScoredChunk]:
        words = _words(text)
        scored = [ScoredChunk(c, float(len(words & _words(c.embedding_text)))) for c, _ in self.stored.values()]
        return sorted((s for s in scored if s.score > 0), key=lambda s: -s.score)[:limit]

    def hybrid_search(self, text: str, vector: Sequence[float], *, limit: int, alpha: float) -> list[ScoredChunk]:
        dense = sorted(self.stored.values(), key=lambda cv: -sum(a * b for a, b in zip(cv[1], vector, strict=True)))
        sparse = self.keyword_search(text, limit=limit)
        by_id = {c.chunk_id: c for c, _ in dense}
        fused = weighted_rrf([[c.chunk_id for c, _ in dense[:limit]], [s.chunk.chunk_id for s in sparse]],
                             weights=[alpha, 1 - alpha])
        return [ScoredChunk(by_id[cid], score) for cid, score in fused[:limit]]

    def count(self) -> int:
        return len(self.stored)

    def chunks(self, *, after: str | None, limit: int) -> list[Chunk]:
        ids = sorted(cid for cid in self.stored if after is None or cid > after)[:limit]
        return [self.stored[cid][0] for cid in ids]

    def finalize_writes(self) -> None:
        self.finalized += 1


class HashEmbeddings(Embeddings):
    """Deterministic bag-of-words vectors (counts what it embeds, and in how many calls)."""

    name = "hash-embeddings"
    dimension = 64

    def __init__(self) -> None:
        self.embedded: list[str] = []
        self.calls = 0

    def embed_documents(self, texts):
        self.calls += 1
        self.embedded.extend(texts)
        vectors = []
        for text in texts:
            vector = [0.0] * self.dimension
            for word in text.lower().split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
            norm = sum(v * v for v in vector) ** 0.5 or 1.0
            vectors.append([v / norm for v in vector])
        return vectors


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z_]{3,}", text)}
