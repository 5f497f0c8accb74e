"""The retriever: one question's hybrid search, and keyword searches for its rewordings, over any vector store; its
documents ranked from the fused chunks, reordered by a reranking model (``ModelReranking``: each question's
``Ranking`` says what its call cost) and by what users taught."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Protocol

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from askflow import tracing
from askflow.domain.audiences import PUBLIC_VIEWER, Viewer, withheld
from askflow.domain.cost import PriceTable, RerankUsage
from askflow.domain.errors import ModelUnavailable
from askflow.domain.model import ScoredChunk
from askflow.ports import Embeddings, RerankCandidate, Reranker, VectorStore
from askflow.retrieval.query import clean_query
from askflow.retrieval.ranking import RankedDocument, in_order, score_documents

log = logging.getLogger(__name__)


class Reranking(Protocol):
    """What reorders documents after fusion (``learning.ranking.LearnedRanking``)."""

    def rerank(self, ranked: Sequence[RankedDocument], *, question_vector: Sequence[float] | None,
               viewer: Viewer) -> list[RankedDocument]: ...


class QuestionVector(list):
    """A question's embedding that also holds the question as it was searched: what a reranking model scores
    documents against. ``Retrieved.vector`` is one, so a caller that hands it back to ``rank`` or ``distinct`` has
    its documents reranked without passing the question again."""

    def __init__(self, values: Iterable[float], *, question: str) -> None:
        super().__init__(values)
        self.question = question


@dataclass(frozen=True)
class Retrieved:
    """A question's hybrid search: the chunks found, and the question's embedding (what ranks by the similarity of
    questions uses it again; it carries the question, for the reranker)."""

    chunks: list[ScoredChunk]
    vector: QuestionVector


@dataclass(frozen=True)
class RerankStats:
    """What a retriever's reranking did so far: questions reranked, questions left in the fused order (a failure or
    the time-out: ``fallbacks``), documents scored and what they cost at the configured prices."""

    reranked: int = 0
    fallbacks: int = 0
    documents: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Ranking:
    """One question's documents, best first, and the reranking model's call that ordered them: what it scored
    (``rerank_usage``) and what that cost at the configured prices (``rerank_usd``); ``None`` and 0 when no model
    reranked them (none configured, fewer than two documents it may read, or a failure: the fused order)."""

    documents: list[RankedDocument]
    rerank_usage: RerankUsage | None = None
    rerank_usd: float = 0.0

    @property
    def distinct(self) -> list[RankedDocument]:
        """The documents without those that repeat a higher-ranked one: what is shown or cited."""
        return [document for document in self.documents if document.repeats is None]


class ModelReranking:
    """A reranking model over the fused top ``top_n`` documents, each read as its best passages cut to
    ``max_chars``. One question's reranking takes at most ``timeout_s``, in up to ``max_attempts`` attempts
    (tenacity: backoff on what ``Reranker`` says may pass); on any failure the fused order stands, and it is counted
    (``stats``) and logged. A document carrying one of ``withheld_audiences`` (fnmatch patterns), or none at all
    while any is set, is never sent: it keeps its fused place, and the sent documents fill the others."""

    def __init__(self, *, reranker: Reranker, top_n: int, max_chars: int, timeout_s: float, max_attempts: int,
                 withheld_audiences: Sequence[str] = (), prices: PriceTable | None = None) -> None:
        if top_n < 1 or max_chars < 1 or timeout_s <= 0 or max_attempts < 1:
            raise ValueError("reranking needs top_n, max_chars and max_attempts of at least 1 and a positive time-out")
        self._reranker = reranker
        self._top_n = top_n
        self._max_chars = max_chars
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._withheld = tuple(withheld_audiences)
        self._prices = prices
        self._lock = threading.Lock()
        self._stats = RerankStats()

    @property
    def stats(self) -> RerankStats:
        return self._stats

    @property
    def model(self) -> str:
        return self._reranker.name

    def reorder(self, question: str, ranked: Sequence[RankedDocument]) -> Ranking:
        """``ranked`` (best first) with its top ``top_n`` in the model's order: each sent document takes the place,
        and the fused score, of the one the model puts there, so that the learned ranking applies on the same
        scale; the withheld ones and those below ``top_n`` keep theirs. The ranking carries the call's usage and
        cost (none on a fallback)."""
        top, rest = list(ranked[: self._top_n]), list(ranked[self._top_n :])
        sent = [document for document in top if not self._withholds(document)]
        if len(sent) < 2:
            return Ranking(list(ranked))
        candidates = [self._candidate(document) for document in sent]
        with tracing.span(f"rerank {self._reranker.name}", kind="client", attributes={
                "gen_ai.operation.name": "rerank", "gen_ai.provider.name": self._reranker.provider,
                "gen_ai.request.model": self._reranker.name, "askflow.rerank.documents": len(candidates),
                "askflow.rerank.withheld": len(top) - len(sent)}) as current:
            started = time.monotonic()
            try:
                order = self._ranked_ids(question, candidates)
            except Exception as error:  # noqa: BLE001 (any failure leaves the fused order, counted and logged)
                self._count(fallback=True)
                log.warning("reranking by %s failed after %.0f ms, the fused order stands: %s: %s",
                            self._reranker.name, (time.monotonic() - started) * 1000, type(error).__name__, error)
                tracing.annotate(current, {"askflow.rerank.outcome": "fallback",
                                           "error.type": type(error).__name__})
                return Ranking(list(ranked))
            usage = self._usage(question, candidates)
            cost = self._prices.rerank_cost([usage]) if self._prices is not None else 0.0
            self._count(documents=len(candidates), cost_usd=cost)
            tracing.annotate(current, {"askflow.rerank.outcome": "reranked", "askflow.rerank.cost_usd": cost})
        by_id = {document.doc_id: document for document in sent}
        named = set(order)  # a document the model left out follows those it ranked, in the fused order
        reordered = iter([by_id[doc_id] for doc_id in order] + [d for d in sent if d.doc_id not in named])
        placed = [document if self._withholds(document) else next(reordered) for document in top]
        return Ranking([replace(document, score=slot.score) for document, slot in zip(placed, top, strict=True)]
                       + rest, rerank_usage=usage, rerank_usd=cost)

    def _ranked_ids(self, question: str, candidates: Sequence[RerankCandidate]) -> list[str]:
        """The model's order of ``candidates``' ids, within the time-out and attempts; raises on a failure or an
        answer that is no ranking of them."""
        deadline = time.monotonic() + self._timeout_s
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts) | stop_before_delay(self._timeout_s),
            wait=wait_random_exponential(multiplier=0.05, max=self._timeout_s / 4),
            retry=retry_if_exception_type(ModelUnavailable),
            before_sleep=lambda state: log.warning(
                "rerank call failed (%s), attempt %d of %d", type(state.outcome.exception()).__name__,
                state.attempt_number, self._max_attempts),
            reraise=True,
        )
        order = retrying(lambda: self._reranker.rerank(question, candidates,
                                                      timeout_s=max(deadline - time.monotonic(), 0.001)))
        known = {candidate.doc_id for candidate in candidates}
        if len(set(order)) != len(order) or not set(order) <= known:
            raise ValueError(f"the reranker's order names unknown or repeated documents: {order[:5]}")
        return list(order)

    def _withholds(self, document: RankedDocument) -> bool:
        return any(withheld(scored.chunk.audiences, self._withheld) for scored in document.chunks)

    def _candidate(self, document: RankedDocument) -> RerankCandidate:
        """The document's title and its best passages, best first, cut so that both fit ``max_chars``."""
        best = sorted(document.chunks, key=lambda scored: scored.score, reverse=True)
        title = best[0].chunk.title[: self._max_chars // 4]
        passages = "\n\n".join(
            f"{scored.chunk.section}\n{scored.chunk.content}" if scored.chunk.section else scored.chunk.content
            for scored in best)
        return RerankCandidate(doc_id=document.doc_id, title=title, text=passages[: self._max_chars - len(title)])

    def _usage(self, question: str, candidates: Sequence[RerankCandidate]) -> RerankUsage:
        """What one call scored, as a reranker bills it: the documents, and their tokens with the question's."""
        characters = sum(len(question) + len(c.title) + len(c.text) for c in candidates)
        return RerankUsage(model=self._reranker.name, documents=len(candidates), tokens=characters // 4)

    def _count(self, *, fallback: bool = False, documents: int = 0, cost_usd: float = 0.0) -> None:
        with self._lock:
            stats = self._stats
            self._stats = RerankStats(reranked=stats.reranked + (not fallback), fallbacks=stats.fallbacks + fallback,
                                      documents=stats.documents + documents, cost_usd=stats.cost_usd + cost_usd)


class Retriever:
    """:param alpha: hybrid weight, 1 = vector only, 0 = keywords only. :param candidates: chunks per search.
    :param model_reranking: a reranking model over the fused top documents (``None``: off).
    :param reranking: what users taught (``None``: the fused ranking alone)."""

    def __init__(self, *, store: VectorStore, embeddings: Embeddings, alpha: float, candidates: int,
                 reranking: Reranking | None = None, model_reranking: ModelReranking | None = None) -> None:
        self._store = store
        self._embeddings = embeddings
        self._alpha = alpha
        self._candidates = candidates
        self._reranking = reranking
        self._model_reranking = model_reranking

    def embed(self, question: str) -> list[float]:
        """The question's embedding as ``search`` makes it (the verified-answer cache matches by it too)."""
        return self._embeddings.embed_query(clean_query(question).dense)

    def labels_of(self, doc_ids: Sequence[str]) -> dict[str, list[str] | None]:
        """Who may read these documents as they are labelled now (``VectorStore.audiences_of``)."""
        return self._store.audiences_of(list(doc_ids)) if doc_ids else {}

    def search(self, question: str, *, vector: Sequence[float] | None = None,
               viewer: Viewer = PUBLIC_VIEWER) -> Retrieved:
        """Hybrid search of what ``viewer`` may read; ``vector``: the question's embedding when it was made already
        (``embed``)."""
        query = clean_query(question)
        vector = vector if vector is not None else self._embeddings.embed_query(query.dense)
        with tracing.span("search hybrid", attributes={"askflow.candidates": self._candidates,
                                                       "askflow.alpha": self._alpha}) as current:
            found = self._store.hybrid_search(query.keywords, vector, limit=self._candidates, alpha=self._alpha,
                                              audiences=viewer.search_filter)
            tracing.annotate(current, {"askflow.found": len(found)})
        return Retrieved(found, QuestionVector(vector, question=question))

    def search_keywords(self, questions: Sequence[str], pool: Executor,
                        viewer: Viewer = PUBLIC_VIEWER) -> list[list[ScoredChunk]]:
        """Rewordings of a question: keyword search only, in parallel. Their worth is other words for the same thing,
        which only the keyword side can use: a paraphrase's sentence embedding lands next to the question's own.
        Embedding them would also put an embedding call (a network round trip with hosted embeddings) on the
        critical path between the rewording and the answer."""
        def search(question: str) -> list[ScoredChunk]:
            with tracing.span("search keywords", attributes={"askflow.candidates": self._candidates}):
                return self._store.keyword_search(clean_query(question).keywords, limit=self._candidates,
                                                  audiences=viewer.search_filter)

        return list(pool.map(tracing.in_context(search), questions))

    def ranking(self, chunks: Sequence[ScoredChunk], *, question_vector: Sequence[float] | None = None,
                viewer: Viewer = PUBLIC_VIEWER, question: str | None = None) -> Ranking:
        """The documents of fused ``chunks``, best first: reordered by the reranking model for ``question`` (default:
        the one ``question_vector`` carries, when it is ``Retrieved.vector``), then with the learned signals applied
        (those that compare questions need ``question_vector``, the asked question's embedding); with what the
        reranking model's call cost."""
        ranking = Ranking(score_documents(chunks))
        question = question if question is not None else getattr(question_vector, "question", None)
        if self._model_reranking is not None and question is not None:
            ranking = self._model_reranking.reorder(
                question, sorted(ranking.documents, key=lambda d: d.score, reverse=True))
        documents = ranking.documents
        if self._reranking is not None:
            documents = self._reranking.rerank(documents, question_vector=question_vector, viewer=viewer)
        return replace(ranking, documents=in_order(documents))

    def rank(self, chunks: Sequence[ScoredChunk], *, question_vector: Sequence[float] | None = None,
             viewer: Viewer = PUBLIC_VIEWER, question: str | None = None) -> list[RankedDocument]:
        """``ranking``'s documents."""
        return self.ranking(chunks, question_vector=question_vector, viewer=viewer, question=question).documents

    def distinct(self, chunks: Sequence[ScoredChunk], *, question_vector: Sequence[float] | None = None,
                 viewer: Viewer = PUBLIC_VIEWER, question: str | None = None) -> list[RankedDocument]:
        """``rank``'s documents without those that repeat a higher-ranked one: what is shown or cited (to
        ``viewer``)."""
        return self.ranking(chunks, question_vector=question_vector, viewer=viewer, question=question).distinct

    @property
    def rerank_stats(self) -> RerankStats | None:
        """What the reranking model did so far (``None``: no reranking model)."""
        return self._model_reranking.stats if self._model_reranking is not None else None

    @property
    def reranker_model(self) -> str | None:
        return self._model_reranking.model if self._model_reranking is not None else None

    @property
    def embedding_model(self) -> str:
        return self._embeddings.name

    @property
    def keyword_weight(self) -> float:
        """The share of a hybrid search that is keywords: the weight a keyword-only result list fuses with."""
        return 1 - self._alpha
