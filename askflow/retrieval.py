"""Retrieval: clean the query, run hybrid search per query in parallel, fuse, and group chunks by document."""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

from askflow.adapters.fusion import weighted_rrf
from askflow.domain.model import ScoredChunk
from askflow.ports import Embeddings, VectorStore

_LOG_LINE = re.compile(
    r"^\s*(\[?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|Traceback \(most recent call last\)|File \".*\", line \d+|"
    r"at [\w.$]+\(|\w+Error:|INFO|WARNING|ERROR|DEBUG)"
)
_NOISE = re.compile(r"(https?://\S+|/[\w./-]{12,}|\b[0-9a-f]{12,}\b|\b\d{2}:\d{2}:\d{2}[.,]?\d*\b)")
_DENSE_QUERY_CHARS = 700


@dataclass(frozen=True)
class Query:
    """The forms one question takes for search: prose for the dense side, prose plus identifiers for keywords."""

    dense: str
    keywords: str


def clean_query(question: str) -> Query:
    """Strip what pasted logs and tracebacks add (timestamps, paths, hashes) and keep code identifiers only for
    the keyword side: they name operators and options exactly, but drown a sentence embedding."""
    lines = question.strip().splitlines()
    prose: list[str] = []
    code: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        if _LOG_LINE.match(line):
            code.append(_NOISE.sub(" ", line))
        elif line.startswith(("    ", "\t")) or line.strip().startswith(("```", ">>>", "$ ")):
            code.append(_NOISE.sub(" ", line))
        else:
            prose.append(_NOISE.sub(" ", line.strip()))
    prose_text = " ".join(prose) or " ".join(code)
    identifiers = " ".join(dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", " ".join(code))))
    return Query(dense=prose_text[:_DENSE_QUERY_CHARS], keywords=f"{prose_text} {identifiers}".strip())


@dataclass(frozen=True)
class RankedDocument:
    """A document's place in a result. ``repeats`` names a higher-ranked document that already holds most of the
    passages this one matched, word for word."""

    doc_id: str
    score: float
    chunks: list[ScoredChunk]
    repeats: str | None = None


class Retriever:
    """:param alpha: hybrid weight, 1 = vector only, 0 = keywords only. :param candidates: chunks per search."""

    def __init__(self, *, store: VectorStore, embeddings: Embeddings, alpha: float, candidates: int) -> None:
        self._store = store
        self._embeddings = embeddings
        self._alpha = alpha
        self._candidates = candidates

    def search(self, question: str) -> list[ScoredChunk]:
        query = clean_query(question)
        vector = self._embeddings.embed_query(query.dense)
        return self._store.hybrid_search(query.keywords, vector, limit=self._candidates, alpha=self._alpha)

    def search_keywords(self, questions: Sequence[str], pool: Executor) -> list[list[ScoredChunk]]:
        """Rewordings of a question: keyword search only, in parallel. Their worth is other words for the same thing,
        which only the keyword side can use: a paraphrase's sentence embedding lands next to the question's own.
        Embedding them would also put an embedding call (a network round trip with hosted embeddings) on the
        critical path between the rewording and the answer."""
        return list(pool.map(
            lambda question: self._store.keyword_search(clean_query(question).keywords, limit=self._candidates),
            questions,
        ))

    @property
    def keyword_weight(self) -> float:
        """The share of a hybrid search that is keywords: the weight a keyword-only result list fuses with."""
        return 1 - self._alpha


def fuse_results(results: Sequence[Sequence[ScoredChunk]], *, weights: Sequence[float]) -> list[ScoredChunk]:
    by_id = {sc.chunk.chunk_id: sc.chunk for result in results for sc in result}
    fused = weighted_rrf([[sc.chunk.chunk_id for sc in result] for result in results], weights=weights)
    return [ScoredChunk(by_id[cid], score) for cid, score in fused]


def fuse_queries(original: Sequence[ScoredChunk], reworded: Sequence[Sequence[ScoredChunk]], *,
                 reworded_weight: float) -> list[ScoredChunk]:
    """The user's own question's results (weighing most) fused with those of its rewordings."""
    if not reworded:
        return list(original)
    return fuse_results([original, *reworded], weights=[1.5] + [reworded_weight] * len(reworded))


def rank_documents(chunks: Sequence[ScoredChunk], *, support: float = 0.3) -> list[RankedDocument]:
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
    return _repeats_last(sorted(ranked, key=lambda d: d.score, reverse=True))


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
