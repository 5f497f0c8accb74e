"""The domain's value objects: documents, chunks, sources, requests and answers."""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

CHUNK_NAMESPACE = uuid.UUID("6f1c3f0e-4b7a-4f57-9a55-2b1d0c0a5e11")


class SourceKind(str, enum.Enum):
    DOCS = "docs"
    SLACK = "slack"
    GITHUB = "github"
    ANSWERED_QUESTION = "answered_question"


class RequestStatus(str, enum.Enum):
    PENDING = "pending"
    ANSWERING = "answering"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (RequestStatus.COMPLETE, RequestStatus.FAILED)


@dataclass(frozen=True)
class Document:
    """One unit of source content: a docs page, a Slack thread, a GitHub issue with its comments."""

    doc_id: str
    text: str
    title: str
    url: str
    kind: SourceKind = SourceKind.DOCS
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def sha(self) -> str:
        return content_hash(self.title, self.url, self.text)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document as stored in the vector store.

    ``sha`` is the fingerprint of the document content *and* the chunking strategy: when either changes, every
    chunk of the document is replaced.
    """

    doc_id: str
    index: int
    content: str
    title: str
    section: str
    url: str
    sha: str
    kind: SourceKind = SourceKind.DOCS
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def chunk_id(self) -> str:
        return str(uuid.uuid5(CHUNK_NAMESPACE, f"{self.doc_id}#{self.index}#{self.sha}"))

    @property
    def embedding_text(self) -> str:
        """What is embedded and keyword-indexed: the title and section path give the chunk its context."""
        heading = " > ".join(part for part in (self.title, self.section) if part)
        return f"{heading}\n\n{self.content}" if heading else self.content


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float


@dataclass(frozen=True)
class Source:
    """A numbered source as cited in an answer: ``[n]`` in the text maps to ``number``."""

    number: int
    title: str
    url: str
    doc_id: str
    section: str
    kind: str
    excerpt: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.number,
            "title": self.title,
            "url": self.url,
            "doc_id": self.doc_id,
            "section": self.section,
            "kind": self.kind,
            "excerpt": self.excerpt,
        }


@dataclass(frozen=True)
class Usage:
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]
    mode: str  # "llm" or "extractive"
    queries: list[str]
    usage: list[Usage]
    timings_ms: dict[str, float]
    context_turns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "sources": [s.to_dict() for s in self.sources],
            "mode": self.mode,
            "queries": self.queries,
            "models": sorted({u.model for u in self.usage}),
            "tokens": {
                "prompt": sum(u.prompt_tokens for u in self.usage),
                "completion": sum(u.completion_tokens for u in self.usage),
            },
            "timings_ms": self.timings_ms,
            "context_turns": self.context_turns,
        }


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()
