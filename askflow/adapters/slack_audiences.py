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

Guests are found without a call per member of a large channel: a Slack Connect channel (``is_ext_shared``) has
strangers by definition; a channel of more than ``MEMBER_LOOKUPS`` members is checked against one listing of the
workspace's users (``users.list``, paged), in which a member not listed is a stranger; a smaller one asks
``users.info`` per member (each cached).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from askflow.adapters.expiring_memo import MAX_CACHE_S, ExpiringMemo
from askflow.domain.audiences import PUBLIC

MEMBER_LOOKUPS = 100  # past this many members, one listing of the workspace's users beats a call per member


class SlackAudiences:
    def __init__(self, *, client, workspace_audience: str, cache_s: float = MAX_CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._workspace = workspace_audience
        self._memo = ExpiringMemo(cache_s=cache_s, clock=clock)

    def channel(self, channel: str) -> dict:
        """``conversations.info``: is_private, is_im, is_mpim."""
        return self._memo.get(("channel", channel), lambda: self._client.conversations_info(channel=channel)["channel"])

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

        return self._memo.get(("members", channel), load)

    def _is_guest(self, user: str) -> bool:
        return self._memo.get(("guest", user), lambda: _guest(self._client.users_info(user=user)["user"]))

    def _workspace_guests(self) -> dict[str, bool]:
        """Every user the workspace lists, and whether each is a guest (one paged ``users.list``)."""
        def load() -> dict[str, bool]:
            users: dict[str, bool] = {}
            for page in self._client.users_list(limit=1000):
                users.update((member["id"], _guest(member)) for member in page["members"])
            return users

        return self._memo.get(("users", ""), load)

    def _has_guests(self, channel: str, info: dict, members: list[str]) -> bool:
        if info.get("is_ext_shared") or info.get("is_pending_ext_shared"):
            return True
        if len(members) <= MEMBER_LOOKUPS:
            return any(self._is_guest(member) for member in members)
        listed = self._workspace_guests()
        return any(listed.get(member, True) for member in members)  # not listed: another organisation's

    def user_audiences(self, user: str) -> list[str]:
        """What a user may read."""
        def load() -> list[str]:
            private: list[str] = []
            for page in self._client.users_conversations(user=user, types="private_channel", limit=1000,
                                                         exclude_archived=True):
                private.extend(f"slack:{c['id']}" for c in page["channels"])
            return private

        channels = self._memo.get(("channels", user), load)
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
        guests = self._has_guests(channel, info, members)
        audiences = {PUBLIC} | (set() if guests else {self._workspace})
        if info.get("is_private"):
            audiences.add(f"slack:{channel}")
        return sorted(audiences)


def _guest(user: dict) -> bool:
    """A guest (single- or multi-channel) or a Slack Connect member: ``public`` and their own channels only."""
    return bool(user.get("is_restricted") or user.get("is_ultra_restricted") or user.get("is_stranger"))
