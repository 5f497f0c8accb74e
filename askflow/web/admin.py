"""The admin page: the period's figures (questions, latency, cost, cache hits, ratings, failures) with small
charts, and the latest requests with their trace ids, each linked to its lineage (``lineage_page``; a document's:
``document_lineage_page``). HTML rendered on the server, no script."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from urllib.parse import quote

from askflow.domain.model import Request
from askflow.insights.render import bar_chart_svg, page
from askflow.service_layer.lineage import DocumentLineage, RequestLineage
from askflow.service_layer.stats import UsageStats


def admin_page(stats: UsageStats, *, trace_link: str | None = None, escalations: Sequence[Request] = (),
               served_again: Mapping[str, int] | None = None) -> str:
    """``trace_link``: a URL pattern with ``{trace_id}`` (Cloud Trace's console), or none. ``escalations``: the latest
    questions handed to the team; ``served_again``: how often each request's answer was served from the cache in the
    period."""
    def money(value: float | None) -> str:
        return "—" if value is None else f"${value:.4f}"

    def share(value: float | None) -> str:
        return "—" if value is None else f"{value:.0%}"

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value / 1000:.2f} s"

    figures = [("Questions", stats.questions), ("Answered", stats.answered), ("Failed", stats.failed),
               ("Latency p50 / p95", f"{ms(stats.latency_p50_ms)} / {ms(stats.latency_p95_ms)}"),
               ("Cost", money(stats.cost_usd)), ("Cost per answer", money(stats.cost_per_answer_usd)),
               ("Served from the cache", f"{stats.cache_hits} ({share(stats.cache_hit_share)})"),
               ("Rated helpful", f"{share(stats.rated_up_share)} of {stats.rated}")]
    labels = [f"{day.day:%b %d}" for day in stats.days]
    failures = "".join(f"<li>{escape(reason)}: {count}</li>" for reason, count in stats.failures_by_reason.items())

    def trace(trace_id: str | None) -> str:
        if not trace_id:
            return "—"
        if trace_link:
            return f'<a href="{escape(trace_link.format(trace_id=trace_id))}"><code>{trace_id}</code></a>'
        return f"<code>{trace_id}</code>"

    rows = "".join(
        f"<tr><td>{r.created_at:%m-%d %H:%M}</td><td>{escape(r.question)}<br><small><code>{r.request_id}</code>"
        f" · <a href='/admin/lineage/{r.request_id}'>lineage</a></small></td>"
        f"<td>{r.status}{' · ' + escape(r.mode) if r.mode else ''}</td><td>{ms(r.latency_ms)}</td>"
        f"<td>{money(r.cost_usd)}</td><td>{r.net_rating:+d}</td><td>{trace(r.trace_id)}</td></tr>"
        for r in stats.recent)
    body = (
        f"<p>{stats.period_start:%Y-%m-%d %H:%M} to {stats.period_end:%Y-%m-%d %H:%M} UTC</p><dl class='figures'>"
        + "".join(f"<div><dt>{name}</dt><dd>{escape(str(value))}</dd></div>" for name, value in figures) + "</dl>"
        + "<h2>Questions per day</h2>" + bar_chart_svg([d.questions for d in stats.days], labels,
                                                       title="Questions per day")
        + "<h2>Cost per day</h2>" + bar_chart_svg([d.cost_usd for d in stats.days], labels, title="Cost per day",
                                                  unit=" $")
        + f"<h2>Failures by reason</h2><ul>{failures or '<li>none</li>'}</ul>"
        + escalations_table(escalations, served_again or {})
        + "<h2>Latest requests</h2><div class='scroll'><table><thead><tr><th>When</th><th>Question</th>"
          "<th>Status</th><th>Took</th><th>Cost</th><th>Rating</th><th>Trace</th></tr></thead>"
          f"<tbody>{rows}</tbody></table></div>")
    return page("askflow — admin", body).replace(
        "</style>", "dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(10rem, 1fr)); "
                    "gap: .5rem; } dl.figures div { border: 1px solid #d9dee8; border-radius: 6px; padding: .5rem; } "
                    "dt { font-size: .85rem; color: #5b6577; } dd { margin: 0; font-size: 1.2rem; }</style>")


def escalations_table(escalations: Sequence[Request], served_again: Mapping[str, int]) -> str:
    """The questions handed to the team: open or answered (and how long the answer took), and how often the team's
    answer was served again."""
    def took(request: Request) -> str:
        answer = request.team_answer
        if answer is None:
            return "—"
        return f"{(answer.at - request.escalation.asked_at).total_seconds() / 3600:.1f} h"

    rows = "".join(
        f"<tr><td>{r.escalation.asked_at:%m-%d %H:%M}</td><td><a href='/answers/{r.request_id}'>"
        f"{escape(r.stored_question)}</a> <small><a href='/admin/lineage/{r.request_id}'>lineage</a></small></td>"
        f"<td>{escape(r.escalation.state)}"
        f"{' · ' + escape(r.escalation.why_not) if r.escalation.why_not else ''}</td><td>{took(r)}</td>"
        f"<td>{served_again.get(r.request_id, 0)}</td></tr>" for r in escalations if r.escalation is not None)
    open_count = sum(r.escalation.state == "open" for r in escalations if r.escalation is not None)
    return (f"<h2>Escalations</h2><p>{open_count} open of the latest {len(escalations)}.</p><div class='scroll'>"
            "<table><thead><tr><th>Asked</th><th>Question</th><th>State</th><th>Answered in</th>"
            f"<th>Served again</th></tr></thead><tbody>{rows or '<tr><td colspan=5>none</td></tr>'}</tbody></table>"
            "</div>")


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC" if value is not None else "—"


def _document_link(doc_id: str) -> str:
    return (f"<a href='/admin/lineage?document={quote(doc_id, safe='')}'><code>{escape(doc_id)}</code></a>")


def lineage_page(report: RequestLineage) -> str:
    """Where one request's answer came from (``askflow lineage REQUEST_ID``): each source's location, version,
    ingestion time and run, and whether the store still holds it; its documents link to their own lineage."""
    notes = [f"{escape(report.status)} · {escape(report.mode or 'no answer')} · answered {_when(report.answered_at)}"
             + (f" · verified by {escape(report.verified_by)}" if report.verified and report.verified_by else "")]
    if report.origin:
        notes.append(f"Served from the cache {_when(report.served_at)}: the verified answer of "
                     f"<a href='/admin/lineage/{escape(report.origin)}'><code>{escape(report.origin)}</code></a>, "
                     "with its sources.")
    if report.team_answer is not None:
        team = report.team_answer
        notes.append(f"The team's answer (on <code>{escape(team.request_id)}</code>) by {escape(team.by)}, marked by "
                     f"{escape(team.marked_by)} {_when(team.at)}: it rests on no source; askflow's attempt drew on "
                     "those below.")
    if not report.recorded:
        notes.append("No lineage recorded: answered before lineage was kept, or not answered.")

    def state(source) -> str:
        if source.state == "no longer current" and source.now is not None:
            return (f"<strong>no longer current</strong>: now {escape(source.now.version or '—')}, ingested "
                    f"{_when(source.now.ingested_at)} by <code>{escape(source.now.run or '—')}</code>")
        return f"<strong>{escape(source.state)}</strong>"

    rows = "".join(
        f"<tr><td>[{s.n}]{'' if s.cited else ' (given)'}</td><td>{_document_link(s.doc_id)}<br>"
        f"<a href='{escape(s.url)}'>{escape(s.title)}</a></td><td>{escape(s.location or '—')}</td>"
        f"<td>{escape(s.version or '—')}</td><td>{_when(s.ingested_at)}<br><code>{escape(s.run or '—')}</code></td>"
        f"<td>{state(s)}</td></tr>" for s in report.sources)
    body = (f"<p><code>{escape(report.request_id)}</code>: {escape(report.question)}</p>"
            + "".join(f"<p>{note}</p>" for note in notes)
            + "<div class='scroll'><table><thead><tr><th>Source</th><th>Document</th><th>Location</th>"
              "<th>Version</th><th>Ingested, by run</th><th>Now</th></tr></thead>"
              f"<tbody>{rows or '<tr><td colspan=6>none</td></tr>'}</tbody></table></div>")
    return page("askflow — lineage", body)


def document_lineage_page(report: DocumentLineage) -> str:
    """The answers that drew on one document (``askflow lineage --document``): which are verified, which verified
    answers a change voided."""
    now = report.now
    stored = (f"Stored: {escape(now.version or '—')} from {escape(now.location or '—')}, ingested "
              f"{_when(now.ingested_at)} by <code>{escape(now.run or '—')}</code>." if now is not None
              else "Not stored (pruned, or never indexed).")
    rows = "".join(
        f"<tr><td>{r.created_at:%m-%d %H:%M}</td><td><a href='/admin/lineage/{escape(r.request_id)}'>"
        f"{escape(r.question)}</a><br><small><code>{escape(r.request_id)}</code></small></td>"
        f"<td>{'cited' if r.cited else 'given'}, {escape(r.version or '—')}</td><td>{escape(r.state)}</td>"
        f"<td>{'verified answer voided by a change' if r.voided else 'verified' if r.verified else 'not verified'}"
        "</td></tr>" for r in report.requests)
    body = (f"<p><code>{escape(report.doc_id)}</code>. {stored}</p><div class='scroll'><table><thead><tr>"
            "<th>Asked</th><th>Question</th><th>Drew on</th><th>Now</th><th>Verified</th></tr></thead>"
            f"<tbody>{rows or '<tr><td colspan=5>no answer drew on it</td></tr>'}</tbody></table></div>")
    return page("askflow — document lineage", body)
