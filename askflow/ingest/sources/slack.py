"""Slack threads as documents: one thread (its root and replies) is one document with its permalink.

The client is slack_sdk's ``WebClient`` as ``bootstrap`` builds it (its retry handlers honour ``Retry-After``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from askflow.domain.model import Document, SourceKind


def _paged(method, key: str, **kwargs: Any) -> Iterator[dict]:
    cursor = None
    while True:
        response = method(cursor=cursor, limit=200, **kwargs)
        yield from response[key]
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return


def load_channel_threads(client, channel: str, *, source: str = "slack") -> list[Document]:
    """Every thread of ``channel`` (a message with replies, or a lone message) as one document."""
    documents = []
    for message in _paged(client.conversations_history, "messages", channel=channel):
        if message.get("subtype") in ("channel_join", "channel_leave", "bot_add"):
            continue
        ts = message["ts"]
        if message.get("reply_count"):
            thread = list(_paged(client.conversations_replies, "messages", channel=channel, ts=ts))
        else:
            thread = [message]
        text = "\n\n".join(f"{m.get('user') or m.get('username') or 'someone'}: {m.get('text', '')}" for m in thread)
        if not text.strip():
            continue
        permalink = client.chat_getPermalink(channel=channel, message_ts=ts)["permalink"]
        first_line = (message.get("text") or "").strip().splitlines()[0][:120] if message.get("text") else ts
        documents.append(
            Document(
                doc_id=f"{source}:{channel}/{ts}", text=text, title=first_line, url=permalink, kind=SourceKind.SLACK,
                metadata={"format": "text", "channel": channel, "thread_ts": ts, "replies": len(thread) - 1},
            )
        )
    return documents
