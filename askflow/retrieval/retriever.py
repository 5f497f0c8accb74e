"""The retriever: one question's hybrid search, and keyword searches for its rewordings, over any vector store."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

from askflow.domain.model import ScoredChunk
from askflow.ports import Embeddings, VectorStore
from askflow.retrieval.query import clean_query


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
    def embedding_model(self) -> str:
        return self._embeddings.name

    @property
    def keyword_weight(self) -> float:
        """The share of a hybrid search that is keywords: the weight a keyword-only result list fuses with."""
        return 1 - self._alpha
