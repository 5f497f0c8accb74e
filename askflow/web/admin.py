"""The admin page: the period's figures (questions, latency, cost, cache hits, ratings, failures) with small
charts, and the latest requests with their trace ids. HTML rendered on the server, no script."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from askflow.domain.model import Request
from askflow.insights.render import bar_chart_svg, page
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
        f"</small></td><td>{r.status}{' · ' + escape(r.mode) if r.mode else ''}</td><td>{ms(r.latency_ms)}</td>"
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
        f"{escape(r.stored_question)}</a></td><td>{escape(r.escalation.state)}"
        f"{' · ' + escape(r.escalation.why_not) if r.escalation.why_not else ''}</td><td>{took(r)}</td>"
        f"<td>{served_again.get(r.request_id, 0)}</td></tr>" for r in escalations if r.escalation is not None)
    open_count = sum(r.escalation.state == "open" for r in escalations if r.escalation is not None)
    return (f"<h2>Escalations</h2><p>{open_count} open of the latest {len(escalations)}.</p><div class='scroll'>"
            "<table><thead><tr><th>Asked</th><th>Question</th><th>State</th><th>Answered in</th>"
            f"<th>Served again</th></tr></thead><tbody>{rows or '<tr><td colspan=5>none</td></tr>'}</tbody></table>"
            "</div>")
