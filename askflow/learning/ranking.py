"""Learned ranking: what graded answers say about documents, applied after fusion.

- **Associations** (question → sources, like click-through data in web search). The earlier questions most like
  the one asked (cosine similarity of their embeddings at least ``min_similarity``) vote on the documents their
  answers cited: a good answer for them, a bad one against, each weighted by how far its similarity goes past
  ``min_similarity``. A document's fused score moves by ``a`` times its votes; a document cited by a good answer to a
  similar question joins the candidates even when the new question's words miss it.
- **Document prior.** Each valid graded answer votes on the documents it cited, whatever it asked. A document's
  smoothed share of good votes, ``p = (good + s) / (good + bad + 2s)`` (a Beta(s, s) prior: no evidence is
  p = 0.5), becomes a bounded multiplicative factor ``1 + w (2p - 1)`` in ``[1 - w, 1 + w]`` on its score: it
  reorders close candidates, cannot lift a document that matched nothing (its normalised score is 0), and with no
  evidence changes nothing.

Only records whose cited documents are all stored unchanged count (``votes.still_valid``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.model import ScoredChunk, SourceKind
from askflow.learning.votes import still_valid
from askflow.ports import LearnedSignals, VectorStore
from askflow.retrieval.ranking import RankedDocument

log = logging.getLogger(__name__)


class LearnedRanking:
    """:param prior_weight: ``w``, the most a prior moves a score (0: off). :param prior_strength: ``s``, the
    pseudo-votes on each side. :param association_weight: ``a`` (0: off). :param min_similarity: how alike an
    earlier question must be to vote. :param neighbours: how many earlier questions are looked at.
    :param collection: and :param embedding_model: whose records count (questions embedded by this model)."""

    def __init__(self, *, signals: LearnedSignals, store: VectorStore, collection: str, embedding_model: str,
                 prior_weight: float, prior_strength: float, association_weight: float, min_similarity: float,
                 neighbours: int = 10) -> None:
        self._signals = signals
        self._store = store
        self._collection = collection
        self._embedding_model = embedding_model
        self._prior_weight = prior_weight
        self._prior_strength = prior_strength
        self._association_weight = association_weight
        self._min_similarity = min_similarity
        self._neighbours = neighbours

    def rerank(self, ranked: Sequence[RankedDocument], *, question_vector: Sequence[float] | None = None,
               viewer: Viewer = PUBLIC_VIEWER) -> list[RankedDocument]:
        """``viewer``: whom the ranking is for; a document joins the candidates by association only when it may read
        it (read from the store through the same filter as any search)."""
        documents = list(ranked)
        if self._association_weight > 0 and question_vector is not None:
            documents = self._associate(documents, question_vector, viewer)
        if self._prior_weight > 0:
            documents = self._apply_priors(documents)
        return documents

    def _associate(self, documents: list[RankedDocument], vector: Sequence[float],
                   viewer: Viewer) -> list[RankedDocument]:
        near = self._signals.nearest(vector, collection=self._collection, embedding_model=self._embedding_model,
                                     limit=self._neighbours, verified_only=False)
        near = [(record, similarity) for record, similarity in near if similarity >= self._min_similarity]
        valid = {record.request_id for record in still_valid([record for record, _ in near], self._store)}
        votes: dict[str, float] = {}
        for record, similarity in near:
            if record.request_id not in valid:
                continue
            weight = (similarity - self._min_similarity) / (1 - self._min_similarity)
            for source in record.sources:
                if source.doc_id in record.cited:
                    votes[source.doc_id] = votes.get(source.doc_id, 0.0) + record.vote * weight
        if not votes:
            return documents
        a = self._association_weight
        out = [replace(d, score=d.score + a * votes[d.doc_id]) if d.doc_id in votes else d for d in documents]
        present = {d.doc_id for d in documents}
        for doc_id, total in votes.items():
            if doc_id not in present and total > 0:
                readable = self._store.document_chunks(doc_id, audiences=viewer.search_filter)
                if readable:  # a document the viewer may not read never joins: as if it were not stored
                    out.append(RankedDocument(doc_id, a * total, [ScoredChunk(readable[0], 0.0)]))
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
