"""The Vertex AI ranking API (Discovery Engine ``rankingConfigs.rank``): ``VertexReranker``, over google-auth's
``AuthorizedSession``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests
from google.auth import exceptions as auth_errors

from askflow.domain.errors import ConfigurationError, ModelUnavailable
from askflow.ports import RerankCandidate, Reranker


class VertexReranker(Reranker):
    """``POST {base_url}/projects/{project}/locations/global/rankingConfigs/{ranking_config}:rank`` with the question
    and one record per document (``id``, ``title``, ``content``), answered with the records' ids and scores, best
    first. :param session: a ``google.auth.transport.requests.AuthorizedSession`` (any ``requests.Session``
    against a loopback server)."""

    provider = "gcp.vertex_ai"

    def __init__(self, *, session: requests.Session, base_url: str, project: str, ranking_config: str,
                 model: str) -> None:
        self._session = session
        self._url = (f"{base_url.rstrip('/')}/projects/{project}/locations/global/rankingConfigs/"
                     f"{ranking_config}:rank")
        self.name = model

    def rerank(self, question: str, candidates: Sequence[RerankCandidate], *, timeout_s: float) -> list[str]:
        body = {"model": self.name, "query": question, "ignoreRecordDetailsInResponse": True,
                "records": [{"id": c.doc_id, "title": c.title, "content": c.text} for c in candidates]}
        try:
            response = self._session.post(self._url, json=body, timeout=timeout_s)
        except auth_errors.RefreshError as error:  # no usable credentials: trying again will not help
            raise ConfigurationError(f"the Vertex AI ranking API needs Google credentials: {error}") from error
        except (requests.Timeout, requests.ConnectionError, auth_errors.TransportError) as error:
            raise ModelUnavailable(f"the Vertex AI ranking API: {type(error).__name__}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise ModelUnavailable(f"the Vertex AI ranking API answered {response.status_code}")
        if response.status_code >= 400:
            raise ConfigurationError(f"the Vertex AI ranking API refused the call ({response.status_code}): "
                                     f"{response.text[:200]}")
        return _ranked_ids(response, {c.doc_id for c in candidates})

    def close(self) -> None:
        self._session.close()


def _ranked_ids(response: requests.Response, known: set[str]) -> list[str]:
    """The records' ids by descending score (whatever order they come in)."""
    try:
        records: Any = response.json().get("records")
    except (ValueError, AttributeError) as error:
        raise ValueError(f"the ranking API's answer is not a JSON object: {response.text[:100]!r}") from error
    if not isinstance(records, list):
        raise ValueError("the ranking API's answer has no records list")
    scored = []
    for record in records:
        record_id = record.get("id") if isinstance(record, dict) else None
        if record_id not in known:
            raise ValueError(f"the ranking API named a record it was not given: {record!r}")
        scored.append((float(record.get("score", 0.0)), record_id))
    return [record_id for _, record_id in sorted(scored, key=lambda item: -item[0])]
