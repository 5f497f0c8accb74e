"""SlackAudiences: who may read what in a Slack workspace, from Slack's own membership (slack_sdk's WebClient),
cached for at most ``cache_s`` (five minutes at most: a member removed from a channel stops reading it soon).

- A channel's readers: a public channel's are the workspace's members (``workspace``), a private channel's its
  members (``slack:<channel id>``).
- A user's audiences: the workspace's and every private channel they are a member of (``users.conversations``); a
  guest (restricted, single-channel) or a Slack Connect member (``is_stranger``) gets ``public`` and their private
  channels only.
- A place's readers (who sees what is posted there: a channel's readers; admins only for a DM or a group DM) and its
  audiences (what an answer posted there may draw on): everyone in the channel reads the bot's reply, so
  what every member may read — a public channel: the workspace's (without it when a guest is a member); a private
  channel: also its own threads; a direct message: everything the asker may read; a group DM: what every participant
  may read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from askflow.domain.audiences import PUBLIC

MAX_CACHE_S = 300.0


class SlackAudiences:
    def __init__(self, *, client, workspace_audience: str, cache_s: float = MAX_CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._workspace = workspace_audience
        self._cache_s = min(cache_s, MAX_CACHE_S)
        self._clock = clock
        self._cached: dict[tuple[str, str], tuple[float, object]] = {}
        self._lock = threading.Lock()

    def _memo(self, kind: str, key: str, load: Callable[[], object]):
        now = self._clock()
        with self._lock:
            hit = self._cached.get((kind, key))
            if hit is not None and now - hit[0] < self._cache_s:
                return hit[1]
        value = load()
        with self._lock:
            self._cached[(kind, key)] = (now, value)
        return value

    def channel(self, channel: str) -> dict:
        """``conversations.info``: is_private, is_im, is_mpim."""
        return self._memo("channel", channel, lambda: self._client.conversations_info(channel=channel)["channel"])

    def channel_readers(self, channel: str) -> list[str]:
        """Who may read a channel's threads (what its indexed documents are labelled with)."""
        info = self.channel(channel)
        if info.get("is_private") or info.get("is_im") or info.get("is_mpim"):
            return [f"slack:{channel}"]
        return [self._workspace]

    def _members(self, channel: str) -> list[str]:
        def load() -> list[str]:
            members: list[str] = []
            for page in self._client.conversations_members(channel=channel, limit=1000):
                members.extend(page["members"])
            return members

        return self._memo("members", channel, load)

    def _is_guest(self, user: str) -> bool:
        def load() -> bool:
            info = self._client.users_info(user=user)["user"]
            return bool(info.get("is_restricted") or info.get("is_ultra_restricted") or info.get("is_stranger"))

        return self._memo("guest", user, load)

    def user_audiences(self, user: str) -> list[str]:
        """What a user may read."""
        def load() -> list[str]:
            private: list[str] = []
            for page in self._client.users_conversations(user=user, types="private_channel", limit=1000,
                                                         exclude_archived=True):
                private.extend(f"slack:{c['id']}" for c in page["channels"])
            return private

        channels = self._memo("channels", user, load)
        return sorted({PUBLIC, *channels, *(() if self._is_guest(user) else (self._workspace,))})

    def place_readers(self, channel: str) -> list[str]:
        """Who sees what is posted in ``channel`` (the readers an answer given there, and its question, may reach):
        a channel's readers; none but admins for a direct message or a group DM."""
        info = self.channel(channel)
        if info.get("is_im") or info.get("is_mpim"):
            return []
        return self.channel_readers(channel)

    def place_audiences(self, channel: str, asker: str | None) -> list[str]:
        """What an answer posted in ``channel`` (asked by ``asker``) may draw on."""
        info = self.channel(channel)
        if info.get("is_im"):
            return self.user_audiences(asker) if asker else [PUBLIC]
        members = self._members(channel)
        if info.get("is_mpim"):
            shared = set.intersection(*(set(self.user_audiences(member)) for member in members)) if members else set()
            return sorted(shared | {PUBLIC})
        guests = any(self._is_guest(member) for member in members)
        audiences = {PUBLIC} | (set() if guests else {self._workspace})
        if info.get("is_private"):
            audiences.add(f"slack:{channel}")
        return sorted(audiences)
