"""The verified-answer cache: a question asked before, and answered well, is answered again from that answer at
once, with no model call.

Precision first: the same normalised question, or an embedding at least ``threshold`` close with nothing that
marks the two as different questions (``questions.difference``). An answer is served only while every source it
cited is stored unchanged, and while the request it came from is stored and still verified (a record whose request
is gone, or was turned down since, is forgotten: the cache never points at a request that does not exist). Every
lookup logs the nearest similarity, hit or miss, so the threshold can be tuned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.model import CitedVersion, LearnedAnswer, Lineage, VerifiedMatch
from askflow.learning.questions import difference, question_key
from askflow.learning.votes import still_valid
from askflow.ports import Embeddings, LearnedSignals, RequestStore, VectorStore
from askflow.retrieval.query import clean_query

log = logging.getLogger(__name__)


def question_vector_text(question: str) -> str:
    """What of a question is embedded to match it: the same text the retriever embeds."""
    return clean_query(question).dense


class AnswerCache:
    """:param threshold: the cosine similarity a semantic match needs. :param candidates: near questions checked."""

    def __init__(self, *, signals: LearnedSignals, store: VectorStore, embeddings: Embeddings, collection: str,
                 threshold: float, candidates: int = 5,
                 requests: Callable[[], RequestStore] | None = None) -> None:
        """:param requests: gives the store of the answers' requests, made at the first lookup that needs it (``None``:
        not checked, as in offline evaluation). When it cannot be made (no Firestore credentials, say), nothing is
        served: an answer whose request cannot be checked is not served as verified."""
        self._requests = requests
        self._signals = signals
        self._store = store
        self._embeddings = embeddings
        self._collection = collection
        self._threshold = threshold
        self._candidates = candidates
        self._lineages: dict[str, Lineage | None] = {}  # request id -> its lineage, as ``_standing`` last read it

    def _readable(self, answers: list[LearnedAnswer], viewer: Viewer) -> list[LearnedAnswer]:
        """Those of ``answers`` whose cited documents ``viewer`` may read as they are labelled now (a location
        relabelled since the answer was verified counts at once)."""
        if viewer.admin or not answers:
            return answers
        now = self._store.audiences_of(sorted({doc_id for answer in answers for doc_id in answer.cited}))
        return [answer for answer in answers if all(viewer.may_read(now.get(doc_id)) for doc_id in answer.cited)]

    def _standing(self, answer: LearnedAnswer, viewer: Viewer) -> bool:
        """Its request is stored and still verified; a record that is not is forgotten. The request's lineage is
        kept for the match (``_lineages``): a served answer's lineage is its original's. A team's answer marked
        internal since it was learned is served only to its internal audience (``Request.team_readers``), at once."""
        if self._requests is None:
            return True
        try:
            request = self._requests().get(answer.request_id)
        except Exception as error:  # noqa: BLE001 - whatever keeps the store from answering: fail closed
            log.warning("cache: %s not served: its request cannot be checked (%s)", answer.request_id, error)
            return False
        if request is not None and request.team_internal and not viewer.may_read(request.team_readers):
            log.info("cache: %s not served: the team's answer is internal", answer.request_id)
            return False
        if request is not None and request.verified:
            self._lineages[answer.request_id] = request.lineage
            return True
        if request is not None and request.graded_revision != request.revision():
            log.info("cache: %s not served: its request is being graded", answer.request_id)
            return False  # its grades are not saved yet (or a change awaits grading): nothing to forget yet
        log.warning("cache: %s forgotten: its request is %s", answer.request_id,
                    "gone" if request is None else "no longer verified")
        self._signals.forget([answer.request_id])
        return False

    def _lineage(self, answer: LearnedAnswer) -> Lineage:
        """The lineage of the answer ``answer`` records: its request's (read by ``_standing``), else its sources with
        the fingerprints it was verified at (a request stored before lineage, or not checked)."""
        stored = self._lineages.get(answer.request_id)
        if stored is not None:
            return stored
        return Lineage(answered_at=answer.graded_at, sources=[
            CitedVersion(n=s.n, doc_id=s.doc_id, title=s.title, url=s.url, section=s.section, kind=s.kind,
                         cited=s.cited, sha=answer.cited.get(s.doc_id, "")) for s in answer.sources])

    def lookup(self, question: str, *, vector: Callable[[], Sequence[float]] | None = None,
               viewer: Viewer = PUBLIC_VIEWER) -> VerifiedMatch | None:
        """:param vector: gives the question's embedding, made only when no exact match is found (the answerer
        passes the one its search will use, so a miss costs no second embedding). :param viewer: whom the answer
        is for: an answer is served only to a viewer who may read it (every source it cited, and the place it was
        asked in: ``LearnedAnswer.readers``)."""
        readers = viewer.search_filter  # who may be served what, inside the queries (before their limits)
        exact = self._readable(still_valid(
            [answer for answer in self._signals.verified_by_key(question_key(question), collection=self._collection,
                                                                readers=readers)
             if viewer.may_read(answer.readers)], self._store), viewer)
        for answer in exact:
            if self._standing(answer, viewer):
                log.info("cache: exact match %s", answer.request_id)
                return VerifiedMatch(answer=answer, similarity=1.0, how="exact", lineage=self._lineage(answer))
        embedded = vector() if vector is not None else self._embeddings.embed_query(question_vector_text(question))
        near = self._signals.nearest(embedded,
                                     collection=self._collection, embedding_model=self._embeddings.name,
                                     limit=self._candidates, verified_only=True, readers=readers)
        nearest = near[0][1] if near else None
        close = [(answer, similarity) for answer, similarity in near
                 if similarity >= self._threshold and viewer.may_read(answer.readers)]
        valid = {answer.request_id
                 for answer in self._readable(still_valid([answer for answer, _ in close], self._store), viewer)}
        for answer, similarity in close:
            why_not = difference(question, answer.question)
            if answer.request_id in valid and why_not is None and self._standing(answer, viewer):
                log.info("cache: hit %s at similarity %.4f (threshold %.2f)", answer.request_id, similarity,
                         self._threshold)
                return VerifiedMatch(answer=answer, similarity=round(similarity, 4), how="semantic",
                                     lineage=self._lineage(answer))
            log.info("cache: %s at %.4f not served: %s", answer.request_id, similarity,
                     why_not or "a cited source changed")
        log.info("cache: miss, nearest similarity %s (threshold %.2f)",
                 f"{nearest:.4f}" if nearest is not None else "none", self._threshold)
        return None
