"""SlackEscalations: the team's escalation channel in Slack (``ASKFLOW_ESCALATION_CHANNEL``).

An escalation is one message: the question, the attempted answer, its sources, the asker's surface ("a web
visitor", an MCP agent, the asking Slack user's mention — never a token, an address or an e-mail) and a link to the
request's page. It carries Slack message metadata (``askflow_escalation`` with the request id), by which a retried
escalation finds its own post instead of posting twice. Every text is escaped as ``slack_replies`` escapes it.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from typing import Any

from askflow.adapters.slack_replies import SECTION_CHARS, UNLINKED, slack_link, slack_text
from askflow.domain.model import Request, TeamAnswer
from askflow.ports import Escalations, ThreadReply

log = logging.getLogger(__name__)
EVENT_TYPE = "askflow_escalation"
ANSWER_CHARS = 1500  # of the attempted answer, in the escalation


class SlackEscalations(Escalations):
    """:param audiences: the workspace's ``SlackAudiences`` (what the channel's members may read)."""

    def __init__(self, *, client: Any, channel: str, audiences: Any,
                 answer_page: Callable[[str], str] | None = None) -> None:
        self._client = client
        self._channel = channel
        self._audiences = audiences
        self._answer_page = answer_page

    def readers(self) -> list[str]:
        return list(self._audiences.place_audiences(self._channel, None))

    def posted(self, request, *, since) -> str | None:
        cursor = None
        while True:
            page = self._client.conversations_history(channel=self._channel, oldest=f"{since.timestamp():.6f}",
                                                      include_all_metadata=True, limit=200, cursor=cursor)
            for message in page.get("messages", []):
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == EVENT_TYPE and \
                        (metadata.get("event_payload") or {}).get("request_id") == request.request_id:
                    return message["ts"]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    def post(self, request, *, why: str) -> str:
        text = (f"*A question askflow could not answer for sure* ({slack_text(why)}), asked by "
                f"{_surface(request)}:\n>{slack_text(request.stored_question[:SECTION_CHARS // 2])}")
        attempted = slack_text(request.answer or "", ANSWER_CHARS)
        sources = "\n".join(f"[{s.n}] {slack_link(s.url, s.title)}" for s in request.sources[:5])
        link = slack_link(self._answer_page(request.request_id), "its page") if self._answer_page else ""
        blocks = [{"type": "section", "text": _mrkdwn(text)},
                  {"type": "section", "text": _mrkdwn(f"*askflow's attempt*\n{attempted or '_none_'}")}]
        if sources:
            blocks.append({"type": "section", "text": _mrkdwn(f"*Sources it found*\n{sources}")})
        blocks.append({"type": "context", "elements": [_mrkdwn(
            "Reply in this thread; a reviewer marks the reply that answers it with :white_check_mark:. "
            f"The asker gets it, and so does the next asker of a question like it. {link}")]})
        response = self._client.chat_postMessage(
            channel=self._channel, text=slack_text(f"Question for the team: {request.stored_question}"[:300]),
            blocks=blocks, unfurl_links=False, **UNLINKED,
            metadata={"event_type": EVENT_TYPE, "event_payload": {"request_id": request.request_id}})
        return response["ts"]

    def reply(self, channel: str, ts: str) -> ThreadReply | None:
        """The one message ``ts``, read alone however long its thread: ``conversations.replies`` bounded to it
        (``oldest`` = ``latest`` = ``ts``, inclusive; Slack lists the thread's root first, hence two). A message in no
        thread, or none at all (``thread_not_found``), is ``None``; any other failure to read it is raised, so that
        the event is not acknowledged and Slack delivers it again."""
        from slack_sdk.errors import SlackApiError

        try:
            page = self._client.conversations_replies(channel=channel, ts=ts, oldest=ts, latest=ts, inclusive=True,
                                                      limit=2)
        except SlackApiError as error:
            if error.response.get("error") != "thread_not_found":
                raise
            log.info("reply %s/%s: no such message", channel, ts)
            return None
        for message in page.get("messages", []):
            if message.get("ts") == ts and message.get("thread_ts"):
                return ThreadReply(text=plain_text(message.get("text", "")), author=message.get("user", ""),
                                   thread_ts=message["thread_ts"], reactions=_reactions(message))
        return None

    @property
    def place(self) -> str:
        return self._channel

    def deliver(self, request: Request, answer: TeamAnswer) -> None:
        deliver_in_slack(self._client, request, answer)


def deliver_in_slack(client: Any, request: Request, answer: TeamAnswer) -> None:
    """The team's answer in the asker's Slack thread, with its author (a Slack user's mention; a person from
    another place, "a team member")."""
    author = (f"<@{_user_id(answer.by.removeprefix('slack:'))}>" if answer.by.startswith("slack:")
              else "a team member")
    client.chat_postMessage(
        channel=request.slack.channel, thread_ts=request.slack.thread_ts, unfurl_links=False, **UNLINKED,
        text=slack_text(f"The team answered: {answer.text}"[:SECTION_CHARS]),
        blocks=[{"type": "section", "text": _mrkdwn(f"*The team answered your question*\n"
                                                     f"{slack_text(answer.text, SECTION_CHARS)}")},
                {"type": "context", "elements": [_mrkdwn(f"Answered by {author}.")]}])


_MENTION = re.compile(r"<@[A-Z0-9]+(?:\|[^>]*)?>")
_CHANNEL = re.compile(r"<#[A-Z0-9]+(?:\|[^>]*)?>")
_SPECIAL = re.compile(r"<!(?:[^>|]*)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")


def plain_text(text: str) -> str:
    """A Slack message as text anyone may read: a user's mention is "a team member", a channel's link "a channel"
    (a private channel's name says too much), ``<!here>`` and the like go, a link keeps its label and URL, and
    Slack's escapes are undone."""
    text = _MENTION.sub("a team member", text)
    text = _CHANNEL.sub("a channel", text)
    text = _SPECIAL.sub(lambda m: m.group(1) or "", text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    return html.unescape(text)


def _reactions(message: dict) -> dict[str, list[str]]:
    """A message's reactions as Slack lists them: name -> the users who reacted."""
    return {str(r.get("name", "")): [str(u) for u in r.get("users") or []]
            for r in message.get("reactions") or [] if isinstance(r, dict)}


def _surface(request: Request) -> str:
    """Who asked, as much as their surface allows: a Slack user's mention, or the surface alone."""
    if request.slack is not None:
        return f"<@{_user_id(request.slack.user)}>" if request.slack.user else "someone in Slack"
    if "mcp" in request.budget_identities:
        return "an agent over MCP"
    return "a web visitor"


def _user_id(user: str | None) -> str:
    return "".join(c for c in (user or "") if c.isalnum())[:64] or "unknown"


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text, "verbatim": True}
