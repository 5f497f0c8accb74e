"""SlackReplies: what the answer worker says in Slack — thread history, a working reaction, a reply posted at once
and edited as the answer is written, then the answer with its numbered sources and rating buttons. The client is
slack_sdk's WebClient as ``bootstrap`` builds it (retry handlers, ``Retry-After`` honoured).

Every text askflow sends is escaped as Slack's formatting rules ask (``slack_text``): an answer quoting an issue
that holds ``<!channel>`` shows those characters and pings no one. The only markup in a message is askflow's own:
its source links (``slack_link``), bold and italics. Names are never linked (``link_names`` off, block text
``verbatim``), so a bare ``@here`` stays text too.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from askflow.domain.model import Request, RequestStatus

log = logging.getLogger(__name__)
WORKING, DONE, FAILED = "hourglass_flowing_sand", "white_check_mark", "warning"
RATE_UP, RATE_DOWN = "askflow_rate_up", "askflow_rate_down"
FRESH = "askflow_fresh"  # answer anew a question answered from a verified earlier answer
ASK_PERSON = "askflow_ask_person"  # the asker hands the question to the team
APPROVE = "askflow_approve"  # a reviewer verifies the answer (``ASKFLOW_SLACK_REVIEWERS``; another's click: nothing)
_MENTION = re.compile(r"<@[A-Z0-9]+>")
PLACEHOLDER = "Looking through the docs…"
WRITING = " ✍️"  # after the text while the answer is being written
SECTION_CHARS = 2900  # of a section block's text (Slack: 3000)
EDIT_CHARS = 3000  # of the answer so far, in an edit
TITLE_CHARS = 150  # of a source's title, as a link's label
UNLINKED = {"link_names": False, "parse": "none"}  # what every post and edit says: no name becomes a mention
_URL_SAFE = "/:?#[]@!$&'()*+,;=%~"  # RFC 3986's reserved characters, and % (kept escapes): the rest is encoded


def question_text(text: str) -> str:
    """A message without its @-mentions of the bot."""
    return _MENTION.sub("", text or "").strip()


def slack_text(text: str, limit: int | None = None) -> str:
    """``text`` as Slack shows it, never as markup: ``&``, ``<`` and ``>`` escaped (``&amp;``, ``&lt;``, ``&gt;``),
    Slack's rule for text that is not a link or a mention, so ``<!channel>``, ``<@U123>`` or ``<url|label>`` in it
    read as typed. Cut to ``limit`` characters, never inside an escape. slack_sdk has no helper for this (its
    ``models`` build blocks and escape nothing); those three replacements are exactly ``html.escape`` without
    quotes."""
    escaped = html.escape(text, quote=False)
    if limit is None or len(escaped) <= limit:
        return escaped
    return re.sub(r"&[a-z]*$", "", escaped[:limit])


def slack_link(url: str, label: str) -> str:
    """``<url|label>``, Slack's link, for an http(s) URL with a host; the label alone for any other (a local
    folder's ``file:`` URI, a ``javascript:`` one). In the URL whatever a URL may not hold unencoded (``|``, ``<``,
    ``>``, spaces, quotes) is percent-encoded and ``&`` escaped; in the label ``&``, ``<`` and ``>`` are escaped: so
    neither ends the link early nor opens another."""
    label = slack_text(" ".join(label.split())[:TITLE_CHARS])
    try:
        parts = urlsplit(url.strip())
        linkable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed host ("http://[::1")
        linkable = False
    if not linkable:
        return label
    href = slack_text(quote(url.strip(), safe=_URL_SAFE))
    return f"<{href}|{label}>" if label else f"<{href}>"


class SlackReplies:
    """:param answer_page: a stored answer's page URL from its request id (``Settings.answer_page``).
    :param reviewers: whether reviewers are configured: answers then carry the approve button."""

    def __init__(self, *, client: Any, answer_page: Callable[[str], str] | None = None,
                 reviewers: bool = False) -> None:
        self._client = client
        self._answer_page = answer_page
        self._reviewers = reviewers

    def mark(self, channel: str, ts: str, *, add: str, remove: str | None = None) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            if remove:
                self._client.reactions_remove(channel=channel, timestamp=ts, name=remove)
            self._client.reactions_add(channel=channel, timestamp=ts, name=add)
        except SlackApiError as error:  # a reaction is a courtesy: never fail the answer for it
            log.warning("could not update the reaction on %s/%s: %s", channel, ts, error.response.get("error"))

    def thread_history(self, channel: str, thread_ts: str, *, before_ts: str) -> list[tuple[str, str]]:
        """Earlier messages of the thread, as (message, "") turns the question can be made stand-alone with."""
        response = self._client.conversations_replies(channel=channel, ts=thread_ts, limit=50)
        return [(question_text(m.get("text", "")), "") for m in response["messages"]
                if float(m["ts"]) < float(before_ts) and question_text(m.get("text", ""))][-4:]

    def notice(self, channel: str, thread_ts: str, text: str) -> None:
        """A short message in the thread (a refusal, say), as text (escaped); a Slack failure is logged."""
        from slack_sdk.errors import SlackApiError

        try:
            self._client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=slack_text(text),
                                          unfurl_links=False, **UNLINKED)
        except SlackApiError as error:
            log.warning("could not post in %s: %s", channel, error.response.get("error"))

    def start_reply(self, request: Request) -> str | None:
        """Post the reply at once; its ``ts``, or ``None`` when Slack refused (the answer is then posted whole)."""
        from slack_sdk.errors import SlackApiError

        try:
            response = self._client.chat_postMessage(channel=request.slack.channel, thread_ts=request.slack.thread_ts,
                                                     text=slack_text(PLACEHOLDER), unfurl_links=False,
                                                     **UNLINKED)
        except SlackApiError as error:
            log.warning("could not start the reply for %s: %s", request.request_id, error.response.get("error"))
            return None
        return response.get("ts")

    def edit_reply(self, request: Request, text: str) -> None:
        """The answer so far; a refused edit is skipped (the next one, or the final answer, shows the text)."""
        from slack_sdk.errors import SlackApiError

        try:
            self._client.chat_update(channel=request.slack.channel, ts=request.slack.reply_ts,
                                     text=slack_text(text, EDIT_CHARS) + WRITING, **UNLINKED)
        except SlackApiError as error:
            log.warning("could not edit the reply for %s: %s", request.request_id, error.response.get("error"))

    def post_answer(self, request: Request) -> None:
        """Reply in the thread (edit the reply posted at start). The answer is already stored: a Slack failure is
        logged, never raised (a raise would only make Pub/Sub redeliver a request that is finished and will not be
        answered again)."""
        from slack_sdk.errors import SlackApiError

        try:
            self._post_answer(request)
        except SlackApiError as error:
            log.error("could not reply in Slack for %s: %s", request.request_id, error.response.get("error"))

    def _post_answer(self, request: Request) -> None:
        slack = request.slack
        complete = request.status is RequestStatus.COMPLETE
        if complete:
            text = request.answer or ""
            blocks = answer_blocks(request, answer_page=self._answer_page, approvable=self._reviewers)
        else:
            text = "Sorry, I could not answer that one."
            blocks = None
        if slack.reply_ts:
            self._client.chat_update(channel=slack.channel, ts=slack.reply_ts, text=slack_text(text),
                                     blocks=blocks or [], **UNLINKED)
        else:
            self._client.chat_postMessage(channel=slack.channel, thread_ts=slack.thread_ts, text=slack_text(text),
                                          blocks=blocks, unfurl_links=False, **UNLINKED)
        self.mark(slack.channel, slack.ts, add=DONE if complete else FAILED, remove=WORKING)


def answer_blocks(request: Request, *, answer_page: Callable[[str], str] | None = None,
                  approvable: bool = False) -> list[dict]:
    """The answer, its numbered sources (whole lines, as many as fit a section), a note on how it was made (a
    cached answer links the page of the answer it was served from), and the rating buttons (and a reviewer's
    approve button when ``approvable``)."""
    blocks: list[dict] = []
    if request.not_sure:  # said first: what follows may not answer it
        asked = request.escalation is not None and request.escalation.state in ("open", "joined")
        blocks.append({"type": "context", "elements": [_mrkdwn(
            "I'm not sure the docs cover this" + (" — I've asked the team, and their answer will come here."
                                                 if asked else ".") + " What I found is below.")]})
    blocks.append({"type": "section", "text": _mrkdwn(slack_text(request.answer or "", SECTION_CHARS))})
    sources = "*Sources*"
    for s in request.sources:
        line = f"\n[{s.n}] {slack_link(s.url, s.title)}{'' if s.cited else ' _(not cited)_'}"
        if len(sources) + len(line) > SECTION_CHARS:
            break
        sources += line
    if request.sources:
        blocks.append({"type": "section", "text": _mrkdwn(sources)})
    if request.mode == "extractive":
        blocks.append({"type": "context", "elements": [
            _mrkdwn("Extractive mode: no language model is configured.")]})
    if request.mode == "cached":
        how = ("the same question" if (request.cache_similarity or 0) >= 1
               else f"a question {round((request.cache_similarity or 0) * 100)}% alike")
        earlier = request.cached_from or ""
        link = slack_link(answer_page(earlier), "the earlier answer") if answer_page is not None else \
            f"request `{slack_text(earlier)}`"
        by = f", verified by {slack_text(request.cached_verified_by)}" if request.cached_verified_by else ""
        note = f"A verified answer to {how}, asked before ({link}{by})."
        blocks.append({"type": "context", "elements": [_mrkdwn(note)]})
    buttons = [
        {"type": "button", "action_id": RATE_UP, "text": {"type": "plain_text", "text": "👍 Helpful"},
         "value": request.request_id},
        {"type": "button", "action_id": RATE_DOWN, "text": {"type": "plain_text", "text": "👎 Not helpful"},
         "value": request.request_id},
    ]
    if request.mode == "cached":
        buttons.append({"type": "button", "action_id": FRESH, "value": request.request_id,
                        "text": {"type": "plain_text", "text": "Get a fresh answer"}})
    elif approvable:
        buttons.append({"type": "button", "action_id": APPROVE, "value": request.request_id,
                        "text": {"type": "plain_text", "text": "✅ Approve (reviewers)"}})
    if request.escalation is None:
        buttons.append({"type": "button", "action_id": ASK_PERSON, "value": request.request_id,
                        "text": {"type": "plain_text", "text": "🙋 Ask a person"}})
    blocks.append({"type": "actions", "elements": buttons})
    return blocks


def _mrkdwn(text: str) -> dict:
    """A mrkdwn text object of text already escaped; ``verbatim``: Slack links no names or channels in it."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}
