"""CloudIdentityGroups: who belongs to a Google group, from the Cloud Identity Groups API over google-auth's
``AuthorizedSession``, each answer cached for at most ``cache_s`` (five minutes at most: a member removed from a
group stops reading its documents soon).

- ``GET {base_url}/v1/groups:lookup?groupKey.id=GROUP``: the group's resource name (``{"name": "groups/ID"}``).
- ``GET {base_url}/v1/groups/ID/memberships:checkTransitiveMembership?query=member_key_id == 'EMAIL'``: whether
  the address is a member, directly or through nested groups (``{"hasMembership": true}``). Google answers it for
  Workspace Enterprise and Cloud Identity Premium accounts only (403 otherwise), to an identity that may view the
  group's members (the Groups Reader admin role).

A call that fails (an HTTP error, a time-out, credentials that do not refresh) raises ``DirectoryUnavailable`` and
is not cached: the next request asks again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from google.auth import exceptions as auth_errors

from askflow.domain.errors import DirectoryUnavailable
from askflow.ports import GroupDirectory

MAX_CACHE_S = 300.0
SWEEP_AT = 1024  # cached answers past which the expired ones are dropped (then twice the number left)
GROUP_NAME = re.compile(r"groups/[A-Za-z0-9_-]+")


class CloudIdentityGroups(GroupDirectory):
    """:param session: a ``google.auth.transport.requests.AuthorizedSession`` with the
    ``cloud-identity.groups.readonly`` scope (any ``requests.Session`` against a loopback server)."""

    def __init__(self, *, session: requests.Session, base_url: str, timeout_s: float = 5.0,
                 cache_s: float = MAX_CACHE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._base = f"{base_url.rstrip('/')}/v1"
        self._timeout_s = timeout_s
        self._cache_s = min(cache_s, MAX_CACHE_S)
        self._clock = clock
        self._cached: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._sweep_at = SWEEP_AT

    def _memo(self, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            hit = self._cached.get(key)
            if hit is not None and now - hit[0] < self._cache_s:
                return hit[1]
        value = load()
        with self._lock:
            self._cached[key] = (now, value)
            if len(self._cached) > self._sweep_at:  # what has expired goes: the cache holds about what is live
                self._cached = {k: hit for k, hit in self._cached.items() if now - hit[0] < self._cache_s}
                self._sweep_at = max(SWEEP_AT, 2 * len(self._cached))
        return value

    def is_member(self, group: str, email: str) -> bool:
        group, email = group.lower(), email.lower()

        def load() -> bool:
            query = f"member_key_id == '{_cel_string(email)}'"
            answer = self._get(f"{self._group_name(group)}/memberships:checkTransitiveMembership", query=query)
            return answer.get("hasMembership") is True

        return self._memo(("member", group, email), load)

    def _group_name(self, group: str) -> str:
        def load() -> str:
            name = self._get("groups:lookup", **{"groupKey.id": group}).get("name")
            if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
                raise DirectoryUnavailable(f"the group {group}: the lookup named no group ({name!r})")
            return name

        return self._memo(("group", group), load)

    def _get(self, path: str, **params: str) -> dict:
        try:
            response = self._session.get(f"{self._base}/{path}", params=params, timeout=self._timeout_s)
        except (requests.RequestException, auth_errors.GoogleAuthError) as error:
            raise DirectoryUnavailable(f"the Cloud Identity Groups API: {type(error).__name__}: {error}") from error
        if response.status_code != 200:
            raise DirectoryUnavailable(f"the Cloud Identity Groups API answered {response.status_code} to "
                                       f"{path.split('/')[-1]}: {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError as error:
            raise DirectoryUnavailable("the Cloud Identity Groups API answered something not JSON") from error
        if not isinstance(answer, dict):
            raise DirectoryUnavailable("the Cloud Identity Groups API answered something not a JSON object")
        return answer

    def close(self) -> None:
        self._session.close()


def _cel_string(text: str) -> str:
    """``text`` inside a single-quoted CEL string (an address may hold an apostrophe)."""
    return text.replace("\\", "\\\\").replace("'", "\\'")
