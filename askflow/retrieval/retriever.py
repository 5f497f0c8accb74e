"""The retriever: one question's hybrid search, and keyword searches for its rewordings, over any vector store."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from askflow import tracing
from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.model import ScoredChunk
from askflow.ports import Embeddings, VectorStore
from askflow.retrieval.query import clean_query
from askflow.retrieval.ranking import RankedDocument, in_order, score_documents


class Reranking(Protocol):
    """What reorders documents after fusion (``learning.ranking.LearnedRanking``)."""

    def rerank(self, ranked: Sequence[RankedDocument], *, question_vector: Sequence[float] | None,
               viewer: Viewer) -> list[RankedDocument]: ...


@dataclass(frozen=True)
class Retrieved:
    """A question's hybrid search: the chunks found, and the question's embedding (what ranks by the similarity of
    questions uses it again)."""

    chunks: list[ScoredChunk]
    vector: list[float]


class Retriever:
    """:param alpha: hybrid weight, 1 = vector only, 0 = keywords only. :param candidates: chunks per search.
    :param reranking: what users taught (``None``: the fused ranking alone)."""

    def __init__(self, *, store: VectorStore, embeddings: Embeddings, alpha: float, candidates: int,
                 reranking: Reranking | None = None) -> None:
        self._store = store
        self._embeddings = embeddings
        self._alpha = alpha
        self._candidates = candidates
        self._reranking = reranking

    def embed(self, question: str) -> list[float]:
        """The question's embedding as ``search`` makes it (the verified-answer cache matches by it too)."""
        return self._embeddings.embed_query(clean_query(question).dense)

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
        return Retrieved(found, list(vector))

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

    def rank(self, chunks: Sequence[ScoredChunk], *, question_vector: Sequence[float] | None = None,
             viewer: Viewer = PUBLIC_VIEWER) -> list[RankedDocument]:
        """The documents of fused ``chunks``, best first, with the learned signals applied (those that compare
        questions need ``question_vector``, the asked question's embedding)."""
        documents = score_documents(chunks)
        if self._reranking is not None:
            documents = self._reranking.rerank(documents, question_vector=question_vector, viewer=viewer)
        return in_order(documents)

    def distinct(self, chunks: Sequence[ScoredChunk], *, question_vector: Sequence[float] | None = None,
                 viewer: Viewer = PUBLIC_VIEWER) -> list[RankedDocument]:
        """``rank``'s documents without those that repeat a higher-ranked one: what is shown or cited (to
        ``viewer``)."""
        return [document for document in self.rank(chunks, question_vector=question_vector, viewer=viewer)
                if document.repeats is None]

    @property
    def embedding_model(self) -> str:
        return self._embeddings.name

    @property
    def keyword_weight(self) -> float:
        """The share of a hybrid search that is keywords: the weight a keyword-only result list fuses with."""
        return 1 - self._alpha
