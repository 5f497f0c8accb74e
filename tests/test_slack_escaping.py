"""What askflow sends to Slack is text, never markup it did not mean: an answer quoting ``<!channel>``, ``<@U123>``,
``<!here>`` or ``&`` arrives escaped in every streamed edit, the fallback text and the final blocks, and a source's
title or URL cannot end its link early or form another one. Through the worker's handler, slack_sdk's WebClient and
the loopback Slack Web API."""

from __future__ import annotations

import json
import re

import pytest

from askflow.adapters.memory import InMemoryRequestStore
from askflow.adapters.slack_replies import SlackReplies
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import Answer, Request, SlackThread, Source
from askflow.service_layer import handlers
from tests.support.loopback_apis import SlackAPI

QUOTED = "The issue says <!channel> and <@U123>, then <!here>: R&D's <https://evil.example|click> & more [1]."
ESCAPED = ("The issue says &lt;!channel&gt; and &lt;@U123&gt;, then &lt;!here&gt;: R&amp;D's "
           "&lt;https://evil.example|click&gt; &amp; more [1].")
SOURCES = [
    Source(n=1, title="Pools|x> <!channel> <https://evil.example|click here", url="https://docs.example/a|b>c?x=1&y=2"),
    Source(n=2, title="Local notes", url="file:///srv/docs/notes.md", cited=False),
    Source(n=3, title="Trap", url="javascript:alert(1)//https://docs.example", cited=False),
]


class QuotingAnswerer:
    """Writes ``QUOTED`` a few words at a time, then answers with it and ``SOURCES``."""

    def labels_of(self, doc_ids):  # who may read its sources now: as they were found (no relabelling meanwhile)
        return {}

    def answer(self, question, history=(), *, fresh=False, on_partial=None, **kwargs):
        words = QUOTED.split(" ")
        for end in range(1, len(words) + 1):
            on_partial(" ".join(words[:end]), SOURCES[:1])
        return Answer(text=QUOTED, sources=SOURCES, mode="llm", queries=[question], usage=[], timings_ms={})


@pytest.fixture
def slack_api():
    api = SlackAPI()
    yield api
    api.stop()


def _unmeant_markup(text: str) -> list[str]:
    """Slack's control sequences in ``text`` other than askflow's source links: mentions, and links elsewhere."""
    return [m for m in re.findall(r"<([^<>]*)>", text) if not m.startswith("https://docs.example/")]


def test_an_answer_quoting_mentions_arrives_escaped_in_every_edit_the_fallback_and_the_blocks(slack_api):
    settings = Settings(slack_bot_token="xoxb-test", slack_api_url=slack_api.base_url, slack_edit_interval_s=0,
                        partial_write_interval_s=0)
    replies = SlackReplies(client=bootstrap(settings).slack_client)
    requests = InMemoryRequestStore()
    thread = SlackThread(channel="C9", ts="1700000600.000100", thread_ts="1700000600.000100", user="U5")
    requests.create(Request(request_id="slack-Ev-quote", question="What does the issue say?", created_at=utcnow(),
                            slack=thread))

    outcome = handlers.answer_request(QuestionQueued(request_id="slack-Ev-quote"), requests=requests,
                                      answerer=QuotingAnswerer(), settings=settings, slack=replies)

    assert outcome == "complete"
    (reply,) = slack_api.replies(thread.thread_ts)
    edits = slack_api.edits(reply["ts"])
    streamed, final = edits[:-1], edits[-1]
    assert len(streamed) == len(QUOTED.split(" "))  # every word was an edit
    for edit in streamed:
        assert not _unmeant_markup(edit["text"]) and ESCAPED.startswith(edit["text"].removesuffix(" ✍️"))
    assert streamed[-1]["text"] == ESCAPED + " ✍️"
    assert final["text"] == ESCAPED  # the fallback text
    blocks = final["blocks"] if isinstance(final["blocks"], list) else json.loads(final["blocks"])
    answer_text, sources_text = (b["text"]["text"] for b in blocks if b["type"] == "section")
    assert answer_text == ESCAPED
    assert sources_text == (
        "*Sources*\n"
        "[1] <https://docs.example/a%7Cb%3Ec?x=1&amp;y=2|Pools|x&gt; &lt;!channel&gt; &lt;https://evil.example|click"
        " here>\n"
        "[2] Local notes _(not cited)_\n"  # a file: URI is no link
        "[3] Trap _(not cited)_")  # nor is javascript:
    assert len(re.findall(r"<[^<>]*>", sources_text)) == 1  # the title formed no second link
    assert all(b["text"]["verbatim"] for b in blocks if b["type"] == "section")  # Slack links no names in them
    for message in [*slack_api.posted, *edits]:
        assert message["parse"] == "none" and message["link_names"] is False


def test_a_notice_is_text_too(slack_api):
    replies = SlackReplies(client=bootstrap(Settings(slack_bot_token="xoxb-test",
                                                     slack_api_url=slack_api.base_url)).slack_client)
    replies.notice("C9", "1700000700.000100", "Sorry, <!everyone> & <#C1|general> can't ask now.")
    (notice,) = slack_api.replies("1700000700.000100")
    assert notice["text"] == "Sorry, &lt;!everyone&gt; &amp; &lt;#C1|general&gt; can't ask now."


def test_escaped_text_is_cut_at_its_limit_never_inside_an_escape():
    from askflow.adapters.slack_replies import slack_link, slack_text

    assert slack_text("a&b", 3) == "a"  # "a&am" would show as typed
    assert slack_text("<<", 8) == "&lt;&lt;" and slack_text("<<", 7) == "&lt;"
    assert slack_link("https://docs.example/x", "A\nlong   title") == "<https://docs.example/x|A long title>"
    assert slack_link("http://[::1", "Broken") == "Broken"
