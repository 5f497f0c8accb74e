"""In-memory fakes of the ports, for fast unit tests of the handlers and the grading loop (requests and runs: the
in-memory adapters); the integration suite runs the real adapters on the emulators and Postgres."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence

from askflow.adapters.memory import InMemoryEvaluationRuns, InMemoryRequestStore
from askflow.domain.messages import Message
from askflow.domain.model import Chunk, ScoredChunk
from askflow.ports import Embeddings, EventBus, VectorStore
from askflow.retrieval.fusion import weighted_rrf

__all__ = ["InMemoryEvaluationRuns", "InMemoryRequestStore"]


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

    def document_chunks(self, doc_id: str, *, audiences) -> list[Chunk]:
        return sorted((c for c, _ in self.stored.values() if c.doc_id == doc_id and _admits(audiences, c)),
                      key=lambda c: c.index)

    def relabel(self, doc_ids, audiences) -> int:
        labels, changed = tuple(sorted(set(audiences))), 0
        for cid, (chunk, vector) in list(self.stored.items()):
            if chunk.doc_id in set(doc_ids) and chunk.audiences != labels:
                self.stored[cid] = (dataclasses.replace(chunk, audiences=labels), vector)
                changed += 1
        return changed

    def audiences_of(self, doc_ids) -> dict:
        return {c.doc_id: list(c.audiences) if c.audiences is not None else None
                for c, _ in self.stored.values() if c.doc_id in set(doc_ids)}

    def scope_audiences(self, prefix: str):
        found = next((c for c, _ in self.stored.values() if c.doc_id.startswith(prefix)), None)
        return list(found.audiences) if found is not None and found.audiences is not None else None

    def document_audiences(self, prefix: str) -> dict:
        return {c.doc_id: list(c.audiences) if c.audiences is not None else None
                for c, _ in self.stored.values() if c.doc_id.startswith(prefix)}

    def document_metadata(self, prefix: str) -> dict[str, dict]:
        return {c.doc_id: c.metadata for c, _ in sorted(self.stored.values(), key=lambda cv: -cv[0].index)
                if c.doc_id.startswith(prefix)}

    def keyword_search(self, text: str, *, limit: int, audiences) -> list[ScoredChunk]:
        words = _words(text)
        scored = [ScoredChunk(c, float(len(words & _words(c.embedding_text)))) for c, _ in self.stored.values()
                  if _admits(audiences, c)]
        return sorted((s for s in scored if s.score > 0), key=lambda s: -s.score)[:limit]

    def hybrid_search(self, text: str, vector: Sequence[float], *, limit: int, alpha: float,
                      audiences) -> list[ScoredChunk]:
        dense = sorted((cv for cv in self.stored.values() if _admits(audiences, cv[0])),
                       key=lambda cv: -sum(a * b for a, b in zip(cv[1], vector, strict=True)))
        sparse = self.keyword_search(text, limit=limit, audiences=audiences)
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


def _admits(audiences, chunk: Chunk) -> bool:
    """The real stores' rule: no filter, or a chunk naming one of ``audiences`` (an unlabelled one never)."""
    return audiences is None or (chunk.audiences is not None and bool(set(audiences) & set(chunk.audiences)))


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z_]{3,}", text)}
