"""ExpiringMemo: answers of a directory (Slack's membership, Google's groups) kept for at most ``MAX_CACHE_S`` (five
minutes: someone removed from a channel or a group stops reading its documents soon), and no longer held once
expired: past ``SWEEP_AT`` entries, and then twice as many as were left, the expired ones are dropped, so the memo
holds about what is live however many askers come and go. A load that raises is not remembered."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

MAX_CACHE_S = 300.0
SWEEP_AT = 1024


class ExpiringMemo:
    def __init__(self, *, cache_s: float = MAX_CACHE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache_s = min(cache_s, MAX_CACHE_S)
        self._clock = clock
        self._cached: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._sweep_at = SWEEP_AT

    def __len__(self) -> int:
        return len(self._cached)

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """``key``'s answer, remembered or ``load``-ed (the time counted from before the load)."""
        now = self._clock()
        with self._lock:
            hit = self._cached.get(key)
            if hit is not None and now - hit[0] < self._cache_s:
                return hit[1]
        value = load()
        with self._lock:
            self._cached[key] = (now, value)
            if len(self._cached) > self._sweep_at:
                self._cached = {k: kept for k, kept in self._cached.items() if now - kept[0] < self._cache_s}
                self._sweep_at = max(SWEEP_AT, 2 * len(self._cached))
        return value
