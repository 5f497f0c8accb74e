"""GitHubEscalations: the team's escalation place as GitHub issues (``ASKFLOW_ESCALATION_GITHUB_REPO``, PyGithub on
any base URL, as ``github_gaps`` files coverage gaps).

An escalation is one issue, labelled ``ASKFLOW_ESCALATION_GITHUB_LABEL``: the question, the attempted answer, its
sources, the asker's surface (never a token, an address or an e-mail) and a link to the request's page, with a
marker as its body's last line (``<!-- askflow-escalation: <request id> -->``) by which a retried escalation finds its
own issue instead of opening a second, and by which the GitHub ingestion never indexes it. The marker is read from
that line alone, and every text quoted above it has its HTML comments defused: a question carrying another request's
marker names no other request's issue. A reviewer
(``ASKFLOW_ESCALATION_GITHUB_REVIEWERS``) marks the answer with a comment starting with the command word
(``ASKFLOW_ESCALATION_GITHUB_COMMAND``): the rest of that comment is the answer (a bare command marks nothing: a comment
it pointed at could be edited or deleted by its author, anyone on a public repository, before the scheduled run
reads it). ``marked`` reads those of the open issues; ``close`` closes an answered one. The team's answer
reaches a Slack asker through ``deliver`` (the Slack adapter's post), a web or MCP asker on the request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from askflow.domain.clock import utcnow
from askflow.domain.model import Request, TeamAnswer
from askflow.ports import Escalations, ThreadReply

log = logging.getLogger(__name__)
MARKER = "<!-- askflow-escalation: {request_id} -->"
_MARKED = re.compile(r"<!-- askflow-escalation: ([A-Za-z0-9_-]{1,64}) -->")
_COMMENT = re.compile(r"<!--|-->")
ANSWER_CHARS = 3000  # of the attempted answer, in the issue


def marker(request_id: str) -> str:
    return MARKER.format(request_id=request_id)


def marked_request(body: str | None) -> str | None:
    """The request id of the marker an escalation issue's body ends with (askflow's own line: never one quoted in
    the question or the attempt above it), or ``None``."""
    lines = (body or "").rstrip().splitlines()
    found = _MARKED.fullmatch(lines[-1].strip()) if lines else None
    return found.group(1) if found else None


class GitHubEscalations(Escalations):
    """:param readers: what everyone who reads the repository's issues may read (``repository_audiences``), asked at
    most once. :param deliver: posts the team's answer in a Slack asker's thread (``None``: no Slack bot)."""

    def __init__(self, *, client: Any, repo: str, label: str, command: str, reviewers: Sequence[str],
                 readers: Callable[[], list[str]], answer_page: Callable[[str], str] | None = None,
                 deliver: Callable[[Request, TeamAnswer], None] | None = None) -> None:
        self._client = client
        self._repo = repo
        self._label = label
        self._command = command
        self._reviewers = {login.lower() for login in reviewers}
        self._readers = readers
        self._known_readers: list[str] | None = None
        self._answer_page = answer_page
        self._deliver = deliver

    @property
    def place(self) -> str:
        return f"github:{self._repo}"

    def readers(self) -> list[str]:
        if self._known_readers is None:
            self._known_readers = list(self._readers())
        return self._known_readers

    def _issues(self, state: str):
        return self._client.get_repo(self._repo).get_issues(state=state, labels=[self._label])

    def posted(self, request, *, since) -> str | None:
        for issue in self._client.get_repo(self._repo).get_issues(state="all", labels=[self._label], since=since):
            if marked_request(issue.body) == request.request_id:
                return str(issue.number)
        return None

    def post(self, request, *, why: str) -> str:
        sources = _uncommented("\n".join(f"{s.n}. [{_plain(s.title)}]({s.url})" for s in request.sources[:5])) \
            or "(none)"
        link = f"\n\n[Its page]({self._answer_page(request.request_id)})" if self._answer_page else ""
        body = (f"A question askflow could not answer for sure ({_plain(why)}), asked by {_surface(request)}:\n\n"
                f"{_quoted(request.stored_question)}\n\n**askflow's attempt**\n\n"
                f"{_quoted((request.answer or '_none_')[:ANSWER_CHARS])}\n\n**Sources it found**\n\n{sources}\n\n"
                f"A reviewer marks the answer with a comment starting with `{self._command}` followed by the answer "
                f"itself. The asker gets it, and so does the next asker of a question like it."
                f"{link}\n\n{marker(request.request_id)}")
        title = f"Question for the team: {_plain(request.stored_question)}"[:250]
        issue = self._client.get_repo(self._repo).create_issue(title=title, body=body, labels=[self._label])
        return str(issue.number)

    def reply(self, channel: str, ts: str) -> ThreadReply | None:
        return None  # marks come from ``marked``, never as events

    def marked(self) -> list[tuple[str, str, TeamAnswer]]:
        """The answers reviewers marked on the open escalation issues: (request id, issue number, answer), the first
        mark of each; the request is the one its body's last line names."""
        found = []
        for issue in self._issues("open"):
            request_id = marked_request(issue.body)
            if request_id is None:
                continue
            answer = self._answer(issue)
            if answer is not None:
                found.append((request_id, str(issue.number), answer))
        return found

    def _answer(self, issue) -> TeamAnswer | None:
        """The first reviewer's command comment with an answer in it: only the reviewer's own words count (no other
        comment, which its author may edit after the mark)."""
        for comment in issue.get_comments():
            body = (comment.body or "").strip()
            login = (comment.user.login if comment.user else "") or ""
            if body.split(maxsplit=1)[:1] == [self._command] and login.lower() in self._reviewers:
                text = body[len(self._command):].strip()
                if text:
                    return TeamAnswer(text=text[:20_000], by=f"github:{login}", marked_by=f"github:{login}",
                                      at=utcnow(), ts=str(comment.id))
        return None

    def close(self, request: Request) -> None:
        escalation = request.escalation
        if escalation is None or escalation.channel != self.place or not (escalation.ts or "").isdigit():
            return
        self._client.get_repo(self._repo).get_issue(int(escalation.ts)).edit(state="closed")

    def deliver(self, request: Request, answer: TeamAnswer) -> None:
        if self._deliver is None:
            raise RuntimeError("no Slack bot to deliver the team's answer with")
        self._deliver(request, answer)


def _plain(text: str) -> str:
    """One line, with nothing GitHub would turn into a mention, a reference or markup around it."""
    return re.sub(r"[@#<>`\[\]]", " ", " ".join(text.split()))


def _quoted(text: str) -> str:
    """A block quote, with mentions defused (``@`` then a zero-width joiner, which notifies no one) and HTML comments
    too (no marker hides in it)."""
    return "\n".join(f"> {line}" for line in _uncommented(text.replace("@", "@\u200d")).splitlines() or [""])


def _uncommented(text: str) -> str:
    """``<!--`` and ``-->`` broken by a zero-width joiner: shown as typed, opening or closing no HTML comment."""
    return _COMMENT.sub(lambda m: m.group(0)[:2] + "\u200d" + m.group(0)[2:], text)


def _surface(request: Request) -> str:
    """Who asked, as much as a shared issue may say: the surface alone (never a Slack user, a token or an address)."""
    if request.slack is not None:
        return "someone in Slack"
    if "mcp" in request.budget_identities:
        return "an agent over MCP"
    return "a web visitor"
