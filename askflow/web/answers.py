"""The pages of stored answers and of the review queue, rendered on the server, no script: a stored answer's own page
(``/answers/{id}``: its question, answer, sources, who verified it and when), the review queue with its audit log
(``/admin/review``) and the admin sign-in (``/admin/login``).

Answers are Markdown from a model or a reviewer: rendered with markdown-it's CommonMark with raw HTML off (an
answer's ``<script>`` is text), and its links checked by markdown-it (no ``javascript:``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from askflow.domain.model import AuditEntry, Request
from askflow.insights.render import page

_CITATION = re.compile(r"\[(\d+)\]")
STYLE = ("blockquote { margin: .5rem 0; padding-left: .8rem; border-left: 3px solid #d9dee8; color: #38414f; } "
         "pre { overflow-x: auto; background: #f4f6fa; padding: .5rem; } .meta { color: #5b6577; } "
         ".badge { display: inline-block; padding: 0 .4rem; border-radius: 4px; background: #e6f4ea; } "
         ".unverified { background: #fdecea; } form { display: inline; } .item { border-top: 1px solid #d9dee8; "
         "padding: .5rem 0; }")


def markdown_html(text: str, *, sources_anchor: str = "source") -> str:
    """``text`` as HTML: Markdown with raw HTML escaped; each ``[n]`` a link to its source on the page."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": False}).render(text or "")
    return _CITATION.sub(lambda m: f'<a href="#{sources_anchor}-{m.group(1)}">[{m.group(1)}]</a>', html)


def verification_line(request: Request) -> str:
    if request.verified:
        when = request.approval.at if request.approval is not None and request.approval.approved else \
            request.graded_at
        return (f'<p><span class="badge">Verified</span> by {escape(request.verified_by or "")}'
                f'{f" on {when:%Y-%m-%d %H:%M} UTC" if when else ""}</p>')
    return '<p><span class="badge unverified">Not verified</span> no reviewer or asker has confirmed it</p>'


def answer_page(request: Request, *, original_link: str | None = None) -> str:
    """A stored answer's page. ``original_link``: a cached answer's link to the page of the answer it was served
    from."""
    sources = "".join(
        f'<li id="source-{s.n}"><a href="{escape(s.url, quote=True)}">{escape(s.title)}</a>'
        f'{" — " + escape(s.section) if s.section else ""}{"" if s.cited else " <small>(not cited)</small>"}</li>'
        for s in request.sources)
    served = (f'<p class="meta">Served from <a href="{escape(original_link, quote=True)}">an earlier verified '
              "answer</a>.</p>" if original_link else "")
    team = request.team_answer
    answered = (f"<h3>The team's answer</h3><p class='meta'>By a team member, {team.at:%Y-%m-%d %H:%M} UTC</p>"
                f"<div class='answer'>{markdown_html(team.text)}</div><h3>askflow's attempt</h3>"
                if team is not None else "")
    body = (f'<p class="meta">Asked {request.created_at:%Y-%m-%d %H:%M} UTC</p>'
            f"<h2>{escape(request.stored_question)}</h2>{verification_line(request)}{served}{answered}"
            f"<div class='answer'>{markdown_html(request.answer or request.error or '')}</div>"
            f"<h2>Sources</h2><ol>{sources or '<li>none</li>'}</ol>")
    return _styled(page("askflow — answer", body))


def review_page(queue: Sequence[Request], audit: Sequence[AuditEntry], *, csrf: str | None) -> str:
    """The review queue: each answer with its question, sources and the reviewer's two buttons (a form posted to
    ``/admin/review/{id}`` with ``csrf``; none without a token to sign them with), then the audit log."""
    def item(request: Request) -> str:
        sources = "".join(f'<li><a href="{escape(s.url, quote=True)}">{escape(s.title)}</a></li>'
                          for s in request.sources if s.cited)
        buttons = "".join(
            f'<form method="post" action="/admin/review/{request.request_id}">'
            f'<input type="hidden" name="csrf" value="{escape(csrf, quote=True)}">'
            f'<button name="decision" value="{value}">{label}</button></form> '
            for value, label in (("approve", "Approve: verified"), ("turn-down", "Turn down"))) if csrf else \
            "<p><small>Set ASKFLOW_API_KEY to approve from this page.</small></p>"
        return (f'<div class="item"><h3><a href="/answers/{request.request_id}">{escape(request.stored_question)}'
                f'</a></h3><p class="meta">{request.created_at:%Y-%m-%d %H:%M} UTC · {escape(request.mode or "")}'
                f' · {escape(request.grade_reason or "")}</p>{markdown_html(request.answer or "")}'
                f"<ol>{sources}</ol>{buttons}</div>")

    log = "".join(f"<tr><td>{e.at:%Y-%m-%d %H:%M}</td><td>{escape(e.by)}</td><td>{escape(e.via)}</td>"
                  f"<td>{escape(e.action)}</td><td><a href='/answers/{e.request_id}'><code>{e.request_id}</code>"
                  "</a></td></tr>" for e in audit)
    body = ("<p>Answers their askers rated up that nothing verified yet. Approving one makes it verified: served "
            "again to the next asker of a question like it, listed on the homepage, and used as a source.</p>"
            + ("".join(item(r) for r in queue) or "<p>The queue is empty.</p>")
            + "<h2>Audit log</h2><div class='scroll'><table><thead><tr><th>When (UTC)</th><th>Who</th><th>From"
              f"</th><th>What</th><th>Answer</th></tr></thead><tbody>{log}</tbody></table></div>")
    return _styled(page("askflow — review queue", body))


def login_page(*, failed: bool = False) -> str:
    note = "<p><strong>That key is not an admin key.</strong></p>" if failed else ""
    body = (f"{note}<form method='post' action='/admin/login'><label>Admin key "
            "<input type='password' name='key' autocomplete='current-password' required></label> "
            "<button>Sign in</button></form>")
    return _styled(page("askflow — admin sign-in", body))


def _styled(html: str) -> str:
    return html.replace("</style>", STYLE + "</style>", 1)
