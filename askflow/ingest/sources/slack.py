"""Slack threads as documents, read incrementally: one thread (its root and replies) is one document, linked by the
permalink built on the workspace's URL.

What was read is kept with the documents themselves: each stored thread's metadata holds its *sync point*, the
``latest_reply``, ``reply_count`` and root ``edited`` time that history showed when it was indexed, and any worker of
any run reads them back through the vector store (``document_metadata``). A run costs:

- one ``auth.test``: the workspace's URL, on which permalinks are built (no ``chat.getPermalink`` per thread), and
  the bot's own user and bot ids: askflow's own messages are never indexed. Neither is a message its app posted from
  another installation (the other side of a Slack Connect channel: another bot, the same ``app_id``): the app's id
  is ``ASKFLOW_SLACK_APP_ID``, or else asked of Slack (``bots.info``) the first time a message of another bot needs
  it, once per run;
- ``conversations.history`` pages of 200 messages from ``oldest``, the newest stored thread less the reply window:
  the new threads, and the recent ones whose replies may have moved;
- one ``conversations.replies`` per listed thread whose sync point moved (a reply posted or deleted, the root edited),
  none for an unchanged thread; a lone message is read from history alone;
- and the re-reads: an edited reply moves nothing history shows (not the root's ``latest_reply``, ``reply_count`` nor
  ``edited``; only the reply itself, in ``conversations.replies``, carries its ``edited.ts``). So each run reads again
  the replies of one in ``reread_every`` of the listed threads with replies (by a hash of the thread's id, another
  share at each of the ``reread_turns`` it takes): an edited reply is read within ``reread_every`` turns of it, at
  ``1/reread_every`` of a replies call per listed thread and turn. A thread read again unchanged is not written.

A listing holds every message after ``oldest``, so a stored thread in that range that it no longer shows was deleted
and is pruned at once; so is one whose root was deleted while it has replies (Slack keeps the root as a
``tombstone``: the thread's question is gone). The reconcile (``full``) lists the whole history — one page per 200
threads, and still no call for an unchanged thread but its re-reads — pruning every deleted thread and reading the
replies posted to threads older than the window.

The client is slack_sdk's ``WebClient`` as ``bootstrap`` builds it (its retry handlers honour ``Retry-After``).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from askflow.domain.model import Document, SourceKind
from askflow.ingest.chunking import INDEXED_FROM

PAGE = 200  # messages per page: the most Slack recommends
SKIPPED_SUBTYPES = frozenset({"channel_join", "channel_leave", "bot_add"})
DELETED = "tombstone"  # the subtype of a thread's root deleted while it has replies
SYNC_FIELDS = ("latest_reply", "reply_count", "edited")  # what a stored thread's metadata says history showed


@dataclass
class Workspace:
    """What ``auth.test`` says of the token: the workspace's URL, and the bot's own user and bot ids; and the id of
    askflow's Slack app, configured or asked of Slack when first needed (``client``: who to ask)."""

    url: str
    user_id: str | None = None
    bot_id: str | None = None
    app_id: str | None = None
    client: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, client, *, app_id: str | None = None) -> Workspace:
        """The token's workspace and identity (one ``auth.test``); ``app_id``: askflow's app, when configured."""
        identity = client.auth_test()
        return cls(url=identity["url"], user_id=identity.get("user_id"), bot_id=identity.get("bot_id"),
                   app_id=app_id, client=client)

    def permalink(self, channel: str, ts: str) -> str:
        """The link ``chat.getPermalink`` gives a top-level message: ``<workspace>/archives/<channel>/p<ts without
        its dot>``."""
        return f"{self.url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"

    def wrote(self, message: dict) -> bool:
        """Whether ``message`` is askflow's own (its answers in threads, its notices): posted by this bot user or
        bot, or by askflow's app through another installation (its ``app_id``, or its ``bot_profile``'s)."""
        if self.user_id and message.get("user") == self.user_id:
            return True
        if self.bot_id and message.get("bot_id") == self.bot_id:
            return True
        app = message.get("app_id") or (message.get("bot_profile") or {}).get("app_id")
        return bool(app) and app == self._own_app()

    def _own_app(self) -> str | None:
        """askflow's app id: the configured one, or ``bots.info`` of this bot, asked once (``""``: Slack names
        none)."""
        if self.app_id is None and self.client is not None and self.bot_id:
            self.app_id = self.client.bots_info(bot=self.bot_id)["bot"].get("app_id") or ""
        return self.app_id or None


@dataclass(frozen=True)
class ChannelChanges:
    """What one run read of a channel."""

    documents: list[Document]  # threads new or changed since they were stored, oldest first
    gone: frozenset[str]  # stored threads the listing shows deleted, or no longer to index
    listed: int  # top-level messages the listing returned, skipped ones included
    oldest: str | None  # where the listing started: ``None``, the whole history
    reread: int = 0  # unchanged-looking threads whose replies were read again (``rereads``)


def read_channel(client, channel: str, *, stored: dict[str, dict[str, Any]], workspace: Workspace,
                 reply_window_s: float, full: bool = False, reread_every: int = 0,
                 reread_turns: Collection[int] = (), source: str = "slack") -> ChannelChanges:
    """The threads of ``channel`` new or changed since ``stored`` (``doc_id -> metadata`` of the channel's stored
    threads), and the stored ones deleted since.

    :param reply_window_s: how far before the newest stored thread the listing starts.
    :param full: list the whole history (the reconcile), as when nothing is stored.
    :param reread_every: read again the replies of one in this many listed threads whose sync point did not move
        (``rereads``; 0: none): the shares that ``reread_turns`` name.
    """
    oldest = None if full else listing_start(stored, reply_window_s)
    listing = list(_paged(client.conversations_history, "messages", channel=channel,
                          **({"oldest": oldest} if oldest is not None else {})))
    roots = {f"{source}:{channel}/{m['ts']}": m for m in listing if _indexable(m, workspace)}
    documents, kept, reread = [], set(), 0
    for doc_id, root in sorted(roots.items(), key=lambda item: Decimal(item[1]["ts"])):
        unmoved = doc_id in stored and sync_point(root) == tuple(stored[doc_id].get(name) for name in SYNC_FIELDS)
        if unmoved and not (root.get("reply_count") and rereads(doc_id, turns=reread_turns, every=reread_every)):
            kept.add(doc_id)
            continue
        document = _thread(client, channel, root, doc_id=doc_id, workspace=workspace)
        if document is None:
            continue
        kept.add(doc_id)
        if unmoved:
            reread += 1
        if not unmoved or document.sha != (stored[doc_id].get(INDEXED_FROM) or {}).get("document"):
            documents.append(document)  # a re-read thread whose text is what was indexed is not written again
    covered = {doc_id for doc_id, metadata in stored.items() if oldest is None
               or (metadata.get("thread_ts") and Decimal(metadata["thread_ts"]) > Decimal(oldest))}
    return ChannelChanges(documents=documents, gone=frozenset(covered - kept), listed=len(listing), oldest=oldest,
                          reread=reread)


def rereads(doc_id: str, *, turns: Collection[int], every: int) -> bool:
    """Whether a run taking ``turns`` reads again the replies of the thread ``doc_id`` though history shows it
    unchanged (an edited reply moves nothing there): one thread in ``every`` per turn, by a hash of its id, each
    turn another share, so ``every`` consecutive turns read each thread once. 0: never."""
    slot = zlib.crc32(doc_id.encode())
    return every > 0 and any((slot + turn) % every == 0 for turn in turns)


def listing_start(stored: dict[str, dict[str, Any]], reply_window_s: float) -> str | None:
    """Where an incremental listing starts (Slack's ``oldest``, exclusive): the newest stored thread less
    ``reply_window_s``; ``None`` (the whole history) when nothing is stored."""
    newest = max((Decimal(m["thread_ts"]) for m in stored.values() if m.get("thread_ts")), default=None)
    if newest is None:
        return None
    return f"{max(newest - Decimal(str(reply_window_s)), Decimal(0)):.6f}"


def sync_point(root: dict) -> tuple:
    """A thread's root as history shows it, reduced to what moves when the thread changes (``SYNC_FIELDS``)."""
    return (root.get("latest_reply") or root["ts"], root.get("reply_count") or 0, (root.get("edited") or {}).get("ts"))


def _indexable(message: dict, workspace: Workspace) -> bool:
    if message.get("subtype") in SKIPPED_SUBTYPES | {DELETED} or workspace.wrote(message):
        return False
    return message.get("thread_ts", message["ts"]) == message["ts"]  # a reply also sent to the channel: its thread's


def _thread(client, channel: str, root: dict, *, doc_id: str, workspace: Workspace) -> Document | None:
    """The thread of ``root`` as one document, without askflow's own replies; ``None`` when no message has text."""
    messages = _paged(client.conversations_replies, "messages", channel=channel, ts=root["ts"]) \
        if root.get("reply_count") else [root]
    thread = [m for m in messages if (m.get("text") or "").strip() and m.get("subtype") not in SKIPPED_SUBTYPES
              and not workspace.wrote(m)]
    if not thread:
        return None
    ts, first = root["ts"], (root.get("text") or "").strip()
    text = "\n\n".join(f"{m.get('user') or m.get('username') or 'someone'}: {m['text']}" for m in thread)
    return Document(
        doc_id=doc_id, text=text, title=first.splitlines()[0][:120] if first else ts,
        url=workspace.permalink(channel, ts), kind=SourceKind.SLACK,
        metadata={"format": "text", "channel": channel, "thread_ts": ts, "replies": sum(m["ts"] != ts for m in thread),
                  **dict(zip(SYNC_FIELDS, sync_point(root), strict=True))},
    )


def _paged(method, key: str, **kwargs: Any) -> Iterator[dict]:
    cursor = None
    while True:
        response = method(cursor=cursor, limit=PAGE, **kwargs)
        yield from response[key]
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return
