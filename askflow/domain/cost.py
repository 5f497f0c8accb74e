"""What model calls cost: a price table applied to what the endpoints report. A chat or embedding model is priced in
US dollars per million input and output tokens (a call through a Batch API at half that: ``BATCH_DISCOUNT``); a
reranker per 1,000 searches (one question with up to so many documents), per 1,000 documents, or per million tokens.
A model missing from the table costs nothing and is named in the log once."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from askflow.domain.model import Usage

log = logging.getLogger(__name__)
_unpriced: set[str] = set()
#: what a call through a Batch API costs of the same call made at once (OpenAI's and Anthropic's batch discount)
BATCH_DISCOUNT = 0.5


class RerankPrice(BaseModel):
    """A reranker's price: ``per_1k_searches`` dollars per 1,000 searches, a search being one question with up to
    ``documents_per_search`` documents (each further such group counts as another search, as Cohere and Vertex AI
    bill), plus ``per_1k_documents`` dollars per 1,000 documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_1k_searches: float = Field(default=0.0, ge=0)
    per_1k_documents: float = Field(default=0.0, ge=0)
    documents_per_search: int = Field(default=100, ge=1)

    def cost(self, documents: int) -> float:
        searches = max(1, math.ceil(documents / self.documents_per_search))
        return (searches * self.per_1k_searches + documents * self.per_1k_documents) / 1000


@dataclass(frozen=True)
class RerankUsage:
    """One rerank call: the model, the documents it scored and their tokens with the question's (estimated at four
    characters each: what a reranker priced by the token bills)."""

    model: str
    documents: int
    tokens: int = 0


class PriceTable:
    """``prices``: model -> ``[per million input tokens, per million output tokens]`` (the output price may be left
    out), or a ``RerankPrice`` (or the mapping of one) for a reranker."""

    def __init__(self, prices: Mapping[str, Sequence[float] | RerankPrice | Mapping[str, Any]]) -> None:
        self._prices: dict[str, tuple[float, float]] = {}
        self._rerank_prices: dict[str, RerankPrice] = {}
        for model, price in prices.items():
            if isinstance(price, RerankPrice):
                self._rerank_prices[model] = price
            elif isinstance(price, Mapping):
                self._rerank_prices[model] = RerankPrice(**price)
            else:
                self._prices[model] = (float(price[0]), float(price[1]) if len(price) > 1 else 0.0)

    def _price(self, model: str) -> tuple[float, float]:
        price = self._prices.get(model)
        if price is None:
            _name_unpriced(model)
            return 0.0, 0.0
        return price

    def cost(self, usage: Sequence[Usage], *, batch: bool = False) -> float:
        """Dollars for these calls; made through a Batch API (``batch``), at its discount."""
        total = 0.0
        for call in usage:
            per_input, per_output = self._price(call.model)
            total += (call.prompt_tokens * per_input + call.completion_tokens * per_output) / 1_000_000
        return total * BATCH_DISCOUNT if batch else total

    def rerank_cost(self, calls: Sequence[RerankUsage]) -> float:
        """Dollars for these rerank calls: by the model's ``RerankPrice``, or by its input price per million tokens
        (Voyage, Jina)."""
        total = 0.0
        for call in calls:
            price = self._rerank_prices.get(call.model)
            if price is not None:
                total += price.cost(call.documents)
            elif call.model in self._prices:
                total += call.tokens * self._prices[call.model][0] / 1_000_000
            else:
                _name_unpriced(call.model)
        return total


def _name_unpriced(model: str) -> None:
    if model not in _unpriced:
        _unpriced.add(model)
        log.warning("no price for model %s in ASKFLOW_MODEL_PRICES: its calls are counted as free", model)
