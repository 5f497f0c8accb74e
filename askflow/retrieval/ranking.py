"""Ranking documents from chunks: a document scores its best passage plus a little for its others, and a document
that repeats a higher-ranked one word for word goes last."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from askflow.domain.model import ScoredChunk


@dataclass(frozen=True)
class RankedDocument:
    """A document's place in a result. ``repeats`` names a higher-ranked document that already holds most of the
    passages this one matched, word for word."""

    doc_id: str
    score: float
    chunks: list[ScoredChunk]
    repeats: str | None = None


def rank_documents(chunks: Sequence[ScoredChunk], *, support: float = 0.3) -> list[RankedDocument]:
    """Documents best first (``score_documents``), a repeat of a higher-ranked one last."""
    return in_order(score_documents(chunks, support=support))


def in_order(documents: Sequence[RankedDocument]) -> list[RankedDocument]:
    return _repeats_last(sorted(documents, key=lambda d: d.score, reverse=True))


def score_documents(chunks: Sequence[ScoredChunk], *, support: float = 0.3) -> list[RankedDocument]:
    """Group chunks by document: a document scores its best chunk plus ``support`` × its other chunks, with scores
    min-max normalised first so that chunks from the tail of the list add next to nothing (a page that answers in
    several strong places beats one lucky paragraph; a long page does not win by size alone)."""
    if not chunks:
        return []
    high = max(sc.score for sc in chunks)
    low = min(sc.score for sc in chunks)
    spread = (high - low) or 1.0
    grouped: dict[str, list[ScoredChunk]] = {}
    for sc in chunks:
        grouped.setdefault(sc.chunk.doc_id, []).append(sc)
    ranked = []
    for doc_id, hits in grouped.items():
        scores = sorted(((h.score - low) / spread for h in hits), reverse=True)
        ranked.append(RankedDocument(doc_id, scores[0] + support * sum(scores[1:]), hits))
    return ranked


def _repeats_last(ranked: Sequence[RankedDocument]) -> list[RankedDocument]:
    """Move below the others each document at least half of whose matched passages a higher-ranked document holds
    word for word: a page kept in two places of a docs tree, or an old and a new version of it. Listed twice, it
    would take two of the few sources an answer cites and show the reader the same text twice."""
    held: dict[str, str] = {}
    distinct: list[RankedDocument] = []
    repeats: list[RankedDocument] = []
    for document in ranked:
        passages = {" ".join(hit.chunk.content.split()) for hit in document.chunks}
        owners = [held[passage] for passage in passages if passage in held]
        if 2 * len(owners) >= len(passages):
            repeats.append(replace(document, repeats=max(set(owners), key=owners.count)))
            continue
        distinct.append(document)
        for passage in passages:
            held.setdefault(passage, document.doc_id)
    return distinct + repeats
