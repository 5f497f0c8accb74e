"""What model calls cost: a price table (US dollars per million input and output tokens, per model) applied to the
token counts the endpoints report. A model missing from the table costs nothing and is named in the log once."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from askflow.domain.model import Usage

log = logging.getLogger(__name__)
_unpriced: set[str] = set()


class PriceTable:
    def __init__(self, prices: Mapping[str, Sequence[float]]) -> None:
        self._prices = {model: (float(price[0]), float(price[1]) if len(price) > 1 else 0.0)
                        for model, price in prices.items()}

    def _price(self, model: str) -> tuple[float, float]:
        price = self._prices.get(model)
        if price is None:
            if model not in _unpriced:
                _unpriced.add(model)
                log.warning("no price for model %s in ASKFLOW_MODEL_PRICES: its calls are counted as free", model)
            return 0.0, 0.0
        return price

    def cost(self, usage: Sequence[Usage]) -> float:
        """Dollars for these calls."""
        total = 0.0
        for call in usage:
            per_input, per_output = self._price(call.model)
            total += (call.prompt_tokens * per_input + call.completion_tokens * per_output) / 1_000_000
        return total
