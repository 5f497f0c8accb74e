"""Learned ranking: what graded answers say about documents, applied after fusion.

- **Document prior.** Each valid graded answer votes on the documents it cited. A document's smoothed share of
  good votes, ``p = (good + s) / (good + bad + 2s)`` (a Beta(s, s) prior: no evidence is p = 0.5), becomes a
  bounded multiplicative factor ``1 + w (2p - 1)`` in ``[1 - w, 1 + w]`` on its fused score: it reorders close
  candidates, cannot lift a document that matched nothing (its normalised score is 0), and with no evidence
  changes nothing.
- **Associations.** A stored good answer that the search found for a new question votes for the documents it cited,
  with ``a`` times its own score: a page that answered similar questions rises, and joins the candidates even when
  the new question's words miss it (like click-through data in web search).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from askflow.domain.model import Chunk, ScoredChunk, SourceKind
from askflow.learning.votes import still_valid
from askflow.ports import LearnedSignals, VectorStore
from askflow.retrieval.ranking import RankedDocument

log = logging.getLogger(__name__)

CITED_SOURCES = "cited_sources"  # a stored answer's metadata: the sources its answer cited


class LearnedRanking:
    """:param prior_weight: ``w``, the most a prior moves a score (0: off). :param prior_strength: ``s``, the
    pseudo-votes on each side. :param association_weight: ``a`` (0: off)."""

    def __init__(self, *, signals: LearnedSignals, store: VectorStore, prior_weight: float, prior_strength: float,
                 association_weight: float) -> None:
        self._signals = signals
        self._store = store
        self._prior_weight = prior_weight
        self._prior_strength = prior_strength
        self._association_weight = association_weight

    def rerank(self, ranked: Sequence[RankedDocument]) -> list[RankedDocument]:
        documents = list(ranked)
        if self._association_weight > 0:
            documents = self._associate(documents)
        if self._prior_weight > 0:
            documents = self._apply_priors(documents)
        return documents

    def _associate(self, documents: list[RankedDocument]) -> list[RankedDocument]:
        added: dict[str, float] = {}
        cited_chunks: dict[str, Chunk] = {}
        for document in documents:
            best = document.chunks[0].chunk
            if best.kind is not SourceKind.ANSWERED_QUESTION:
                continue
            for source in best.metadata.get(CITED_SOURCES) or []:
                doc_id = source.get("doc_id")
                if not doc_id:
                    continue
                added[doc_id] = added.get(doc_id, 0.0) + self._association_weight * document.score
                cited_chunks.setdefault(doc_id, _chunk_of(source))
        if not added:
            return documents
        present = {document.doc_id for document in documents}
        current = self._store.fingerprints(sorted(set(added) - present))  # a cited page may be gone since
        out = [replace(d, score=d.score + added.get(d.doc_id, 0.0)) for d in documents]
        for doc_id in sorted(set(added) - present):
            if doc_id in current:
                out.append(RankedDocument(doc_id, added[doc_id], [ScoredChunk(cited_chunks[doc_id], 0.0)]))
        return out

    def _apply_priors(self, documents: list[RankedDocument]) -> list[RankedDocument]:
        doc_ids = [d.doc_id for d in documents if d.chunks[0].chunk.kind is not SourceKind.ANSWERED_QUESTION]
        good: dict[str, int] = {}
        bad: dict[str, int] = {}
        for answer in still_valid(self._signals.citing(doc_ids), self._store):
            tally = good if answer.vote > 0 else bad
            for doc_id in answer.cited:
                tally[doc_id] = tally.get(doc_id, 0) + 1
        if not good and not bad:
            return documents
        s, w = self._prior_strength, self._prior_weight
        out = []
        for document in documents:
            g, b = good.get(document.doc_id, 0), bad.get(document.doc_id, 0)
            p = (g + s) / (g + b + 2 * s)
            out.append(replace(document, score=document.score * (1 + w * (2 * p - 1))) if g or b else document)
        return out


def _chunk_of(source: dict) -> Chunk:
    """A cited source as a chunk (its excerpt as the content), for a page that enters the candidates by
    association alone."""
    return Chunk(doc_id=source["doc_id"], index=-1, content=source.get("excerpt", ""),
                 title=source.get("title", ""), section=source.get("section", ""), url=source.get("url", ""),
                 sha="", kind=SourceKind(source.get("kind") or SourceKind.DOCS.value))
