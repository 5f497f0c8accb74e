"""The Cohere-compatible rerank wire format (Cohere's ``/v1/rerank``; Voyage, Jina, vLLM and Infinity serve the same
request): ``CohereReranker``, over httpx."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from askflow.domain.errors import ConfigurationError, ModelUnavailable
from askflow.ports import RerankCandidate, Reranker


class CohereReranker(Reranker):
    """``POST url {"model", "query", "documents": [text, ...]}``, answered with the documents' indices and scores:
    ``{"results": [{"index", "relevance_score"}]}`` (Cohere, Jina, vLLM, Infinity) or ``{"data": [...]}`` (Voyage).
    A document is sent as its title, a blank line and its passages. :param client: an ``httpx.Client`` carrying the
    endpoint's key (``Authorization: Bearer``)."""

    provider = "cohere"

    def __init__(self, *, client: httpx.Client, url: str, model: str) -> None:
        self._client = client
        self._url = url
        self.name = model

    def rerank(self, question: str, candidates: Sequence[RerankCandidate], *, timeout_s: float) -> list[str]:
        documents = [f"{c.title}\n\n{c.text}" if c.title else c.text for c in candidates]
        try:
            response = self._client.post(self._url, timeout=timeout_s, json={
                "model": self.name, "query": question, "documents": documents, "return_documents": False})
        except httpx.TransportError as error:  # time-outs, refused and dropped connections
            raise ModelUnavailable(f"reranker {self._url}: {type(error).__name__}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise ModelUnavailable(f"reranker {self._url} answered {response.status_code}")
        if response.status_code >= 400:
            raise ConfigurationError(f"reranker {self._url} refused the call ({response.status_code}): "
                                     f"{response.text[:200]}")
        return _ranked_ids(_results(response), candidates, url=self._url)

    def close(self) -> None:
        self._client.close()


def _results(response: httpx.Response) -> list[Any]:
    try:
        body = response.json()
    except ValueError as error:
        raise ValueError(f"the reranker's answer is not JSON: {response.text[:100]!r}") from error
    results = body.get("results", body.get("data")) if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise ValueError("the reranker's answer has no results list")
    return results


def _ranked_ids(results: list[Any], candidates: Sequence[RerankCandidate], *, url: str) -> list[str]:
    """The candidates' ids by descending score (whatever order the results come in)."""
    scored = []
    for result in results:
        index = result.get("index") if isinstance(result, dict) else None
        score = result.get("relevance_score", result.get("score")) if isinstance(result, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(candidates) or not isinstance(score, (int, float)):
            raise ValueError(f"reranker {url}: a result is not an index of the documents with a score: {result!r}")
        scored.append((score, index))
    return [candidates[index].doc_id for _, index in sorted(scored, key=lambda item: -item[0])]
