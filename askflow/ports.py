"""The ports: small interfaces the domain talks to. Adapters in ``askflow.adapters`` implement them."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from askflow.domain.model import Chunk, ScoredChunk, Usage


class VectorStore(abc.ABC):
    """Chunks with their vectors, searched by keywords and by vector together (hybrid)."""

    @abc.abstractmethod
    def ensure_collection(self, dimension: int) -> None:
        """Create the collection if it does not exist; idempotent."""

    @abc.abstractmethod
    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Write chunks by their deterministic ids; returns how many were written."""

    @abc.abstractmethod
    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of these documents; returns how many chunks went."""

    @abc.abstractmethod
    def document_fingerprints(self, prefix: str = "") -> dict[str, str]:
        """``doc_id -> sha`` for the stored documents whose id starts with ``prefix``."""

    @abc.abstractmethod
    def document_metadata(self, prefix: str) -> dict[str, dict[str, Any]]:
        """``doc_id -> metadata`` (of its first chunk) for the stored documents whose id starts with ``prefix``."""

    @abc.abstractmethod
    def hybrid_search(
        self, text: str, vector: Sequence[float], *, limit: int, alpha: float
    ) -> list[ScoredChunk]:
        """Keyword and vector search fused; ``alpha`` = 1 is pure vector, 0 pure keyword."""

    @abc.abstractmethod
    def keyword_search(self, text: str, *, limit: int) -> list[ScoredChunk]:
        """Keyword search alone (BM25 or the like), best first; a query with no known word finds nothing."""

    @abc.abstractmethod
    def count(self) -> int:
        """How many chunks the collection holds."""

    def finalize_writes(self) -> None:  # noqa: B027 - optional hook
        """Called once after a batch of writes, to refresh whatever the store derives from its content."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class Embeddings(abc.ABC):
    name: str
    dimension: int

    @abc.abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage


class ChatModel(abc.ABC):
    name: str

    @abc.abstractmethod
    def complete(self, system: str, user: str, *, json_output: bool = False) -> Completion: ...


class RequestStore(abc.ABC):
    """The durable record of every question: one document per request."""

    @abc.abstractmethod
    def create(self, request_id: str, record: dict[str, Any]) -> None:
        """Store a new request; raises ``Duplicate`` when the id is taken."""

    @abc.abstractmethod
    def get(self, request_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def claim(self, request_id: str, *, lease_s: float) -> dict[str, Any] | None:
        """Atomically move a request to ``answering`` for this worker.

        Returns the record when this worker may answer it, ``None`` when it is already terminal or another worker
        holds an unexpired lease.
        """

    @abc.abstractmethod
    def finish(self, request_id: str, fields: dict[str, Any]) -> bool:
        """Atomically write a terminal state unless one is already there; returns whether it wrote."""

    @abc.abstractmethod
    def unfinished(self, *, updated_before: Any, limit: int) -> list[dict[str, Any]]:
        """Requests not yet in a terminal state and last changed before ``updated_before``, oldest first."""

    @abc.abstractmethod
    def thread_history(self, thread_id: str, *, before: Any, limit: int = 4) -> list[tuple[str, str]]:
        """(question, answer) of the thread's completed requests created before ``before``, oldest first."""

    @abc.abstractmethod
    def update(self, request_id: str, fields: dict[str, Any]) -> None:
        """Write fields on an existing request (grades); never changes its status."""

    @abc.abstractmethod
    def save_evaluation_run(self, run_id: str, summary: dict[str, Any]) -> None:
        """Keep one evaluation run's summary."""

    @abc.abstractmethod
    def rate(self, request_id: str, rater: str, rating: dict[str, Any]) -> dict[str, Any] | None:
        """Set ``rater``'s rating on a request (replacing theirs); returns the record, ``None`` if unknown."""

    @abc.abstractmethod
    def recent_good(self, limit: int) -> list[dict[str, Any]]:
        """The most recent requests graded good and public, newest first."""


class EventBus(abc.ABC):
    @abc.abstractmethod
    def publish(self, topic: str, payload: dict[str, Any], **attributes: str) -> str:
        """Publish a JSON payload; returns the message id."""
