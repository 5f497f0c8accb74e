"""Chunking strategies: documents in, chunks out.

``section`` (default): split into sections by heading, keep the heading path as the chunk's ``section`` (prepended
to the embedded text), pack whole paragraphs and code blocks up to ``chunk_size``; only a block larger than a chunk
is cut, by LangChain's language-aware ``RecursiveCharacterTextSplitter``.
``recursive``: LangChain's ``RecursiveCharacterTextSplitter`` over the whole page (the plain baseline).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath

from askflow.config import SPLITTERS
from askflow.domain.model import Chunk, Document, content_hash
from askflow.ingest.sections import Section, blocks, markdown_sections, rst_sections

_STRATEGY_VERSION = "2"
INDEXED_FROM = "indexed_from"


def resha(chunk: Chunk, embedding_model: str) -> Chunk:
    """The chunk as ``embedding_model`` would have indexed it (its fingerprint names the model), so that embedding a
    collection again with another model leaves nothing for the next ingestion run to redo. A chunk stored before
    chunks said what they were indexed from keeps its fingerprint."""
    made_from = chunk.metadata.get(INDEXED_FROM)
    if not isinstance(made_from, dict) or not {"document", "strategy"} <= set(made_from):
        return chunk
    return dataclasses.replace(chunk, sha=content_hash(made_from["document"], made_from["strategy"], embedding_model))


def document_text(chunks: Sequence[Chunk]) -> str:
    """A document as its chunks (in order) give it back: its title, each section's heading once before its first
    chunk, and the chunks' content (an overlap repeated). What the contextual step shows a model of the document a
    chunk is placed in (``askflow.ingest.contextual``)."""
    parts, section = [f"# {chunks[0].title}"] if chunks and chunks[0].title else [], None
    for chunk in chunks:
        if chunk.section and chunk.section != section:
            parts.append(f"## {chunk.section}")
            section = chunk.section
        parts.append(chunk.content)
    return "\n\n".join(parts)


@dataclass(frozen=True)
class ChunkingStrategy:
    splitter: str = "section"
    chunk_size: int = 1000
    chunk_overlap: int = 150

    def __post_init__(self) -> None:
        if self.splitter not in SPLITTERS:
            raise ValueError(f"unknown splitter {self.splitter!r}; choose one of {', '.join(SPLITTERS)}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError("chunk_overlap must be at least 0 and smaller than chunk_size")

    @property
    def fingerprint(self) -> str:
        return f"{self.splitter}:{self.chunk_size}:{self.chunk_overlap}:v{_STRATEGY_VERSION}"

    def document_sha(self, document: Document, embedding_model: str) -> str:
        """What decides whether a stored document is current: its content, this strategy and the model."""
        return content_hash(document.sha, self.fingerprint, embedding_model)

    def split(self, document: Document, sha: str) -> list[Chunk]:
        pieces = self._section_pieces(document) if self.splitter == "section" else self._recursive_pieces(document)
        # what ``sha`` was made from, less the model: another model's fingerprint of the same chunk (``resha``)
        metadata = document.metadata | {INDEXED_FROM: {"document": document.sha, "strategy": self.fingerprint}}
        return [
            Chunk(
                doc_id=document.doc_id, index=i, content=text, title=document.title, section=section,
                url=document.url, sha=sha, kind=document.kind, metadata=metadata, audiences=document.audiences,
            )
            for i, (section, text) in enumerate(pieces)
        ]

    # -- strategies --------------------------------------------------------------------------------------------
    def _recursive_pieces(self, document: Document) -> list[tuple[str, str]]:
        return [("", text) for text in self._splitter_for(document).split_text(document.text)]

    def _section_pieces(self, document: Document) -> list[tuple[str, str]]:
        pieces: list[tuple[str, str]] = []
        for section in _sections(document):
            heading = " > ".join(p for p in section.path if p != document.title)
            for text in self._pack(blocks(section.body), document):
                pieces.append((heading, text))
        return pieces

    def _pack(self, parts: list[str], document: Document) -> list[str]:
        chunks: list[str] = []
        current: list[str] = []
        size = 0
        for part in parts:
            if len(part) > self.chunk_size:
                if current:
                    chunks.append("\n\n".join(current))
                    current, size = [], 0
                chunks.extend(self._splitter_for(document).split_text(part))
                continue
            if size + len(part) + 2 > self.chunk_size and current:
                chunks.append("\n\n".join(current))
                # carry the last block over when it fits the overlap budget
                tail = current[-1] if len(current[-1]) <= self.chunk_overlap else None
                current, size = ([tail], len(tail)) if tail else ([], 0)
            current.append(part)
            size += len(part) + 2
        if current:
            chunks.append("\n\n".join(current))
        return [c for c in chunks if c.strip()]

    def _splitter_for(self, document: Document):
        return self._splitters[_language(document)]

    @cached_property
    def _splitters(self):
        from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

        def make(language: Language | None):
            if language is None:
                return RecursiveCharacterTextSplitter(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
            return RecursiveCharacterTextSplitter.from_language(
                language, chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap
            )

        return {"rst": make(Language.RST), "markdown": make(Language.MARKDOWN), "text": make(None)}


def _language(document: Document) -> str:
    fmt = document.metadata.get("format") or PurePosixPath(document.doc_id).suffix.lstrip(".")
    if fmt == "rst":
        return "rst"
    if fmt in ("md", "mdx", "markdown", "html", "htm"):
        return "markdown"
    return "text"


def _sections(document: Document) -> list[Section]:
    language = _language(document)
    if language == "rst":
        return rst_sections(document.text)
    if language == "markdown":
        return markdown_sections(document.text)
    return [Section((), document.text)]
