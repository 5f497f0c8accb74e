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
import time
from collections.abc import Callable

import requests
from google.auth import exceptions as auth_errors

from askflow.adapters.expiring_memo import MAX_CACHE_S, ExpiringMemo
from askflow.domain.errors import DirectoryUnavailable
from askflow.ports import GroupDirectory

GROUP_NAME = re.compile(r"groups/[A-Za-z0-9_-]+")


class CloudIdentityGroups(GroupDirectory):
    """:param session: a ``google.auth.transport.requests.AuthorizedSession`` with the
    ``cloud-identity.groups.readonly`` scope (any ``requests.Session`` against a loopback server)."""

    def __init__(self, *, session: requests.Session, base_url: str, timeout_s: float = 5.0,
                 cache_s: float = MAX_CACHE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._base = f"{base_url.rstrip('/')}/v1"
        self._timeout_s = timeout_s
        self._memo = ExpiringMemo(cache_s=cache_s, clock=clock)

    def is_member(self, group: str, email: str) -> bool:
        group, email = group.lower(), email.lower()

        def load() -> bool:
            query = f"member_key_id == '{_cel_string(email)}'"
            answer = self._get(f"{self._group_name(group)}/memberships:checkTransitiveMembership", query=query)
            return answer.get("hasMembership") is True

        return self._memo.get(("member", group, email), load)

    def _group_name(self, group: str) -> str:
        def load() -> str:
            name = self._get("groups:lookup", **{"groupKey.id": group}).get("name")
            if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
                raise DirectoryUnavailable(f"the group {group}: the lookup named no group ({name!r})")
            return name

        return self._memo.get(("group", group), load)

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
