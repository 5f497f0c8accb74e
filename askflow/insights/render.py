"""A report as a self-contained HTML page (an SVG chart drawn here: no script, no CDN, no build step), as CSV, and
as a text table for the terminal. Every text from a request is escaped; private questions were masked when the
report was built, except in its admin view, which only the admin page's ``html_page(report, admin=True)`` shows."""

from __future__ import annotations

import csv
import io
from html import escape

from askflow.insights.model import ClusterInsight, InsightsReport

PALETTE = ["#0b5fff", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d6a9f"]
CHART_CLUSTERS = 6


def chart_svg(report: InsightsReport) -> str:
    """Questions per day for the largest clusters, one line each."""
    clusters = report.clusters[:CHART_CLUSTERS]
    days = max((len(c.daily) for c in clusters), default=1)
    width, height, left, bottom, top = 640, 240, 36, 28, 12
    peak = max((max(c.daily) for c in clusters if c.daily), default=1) or 1

    def x(day: int) -> float:
        return left + (width - left - 8) * (day / max(1, days - 1))

    def y(count: int) -> float:
        return top + (height - top - bottom) * (1 - count / peak)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="Questions per day for the {len(clusters)} largest clusters">',
             f'<line x1="{left}" y1="{y(0)}" x2="{width - 8}" y2="{y(0)}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{y(peak) + 4}" text-anchor="end" font-size="11">{peak}</text>',
             f'<text x="{left - 6}" y="{y(0) + 4}" text-anchor="end" font-size="11">0</text>',
             f'<text x="{left}" y="{height - 8}" font-size="11">{report.period_start:%b %d}</text>',
             f'<text x="{width - 8}" y="{height - 8}" text-anchor="end" font-size="11">'
             f'{report.period_end:%b %d}</text>']
    for color, cluster in zip(PALETTE, clusters, strict=False):
        points = " ".join(f"{x(d):.1f},{y(n):.1f}" for d, n in enumerate(cluster.daily))
        parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2.5" points="{points}">'
                     f"<title>{escape(cluster.title)}: {cluster.size} questions</title></polyline>")
    parts.append("</svg>")
    legend = "".join(f'<li><span class="swatch" style="background:{color}"></span>{escape(c.title)}</li>'
                     for color, c in zip(PALETTE, clusters, strict=False))
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'


def bar_chart_svg(values: list[float], labels: list[str], *, title: str, unit: str = "") -> str:
    """A small bar chart (one bar per label), drawn as SVG here."""
    width, height, left, bottom, top = 640, 160, 48, 24, 10
    peak = max(values, default=0) or 1
    step = (width - left - 8) / max(1, len(values))
    bars = []
    for n, (value, label) in enumerate(zip(values, labels, strict=True)):
        bar = (height - top - bottom) * value / peak
        bars.append(f'<rect x="{left + n * step + 2:.1f}" y="{height - bottom - bar:.1f}" '
                    f'width="{max(1, step - 4):.1f}" height="{bar:.1f}" fill="#0b5fff">'
                    f"<title>{escape(label)}: {value:g}{unit}</title></rect>")
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">{peak:g}{unit}</text>'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 8}" y2="{height - bottom}" stroke="#999"/>'
            + "".join(bars)
            + (f'<text x="{left}" y="{height - 6}" font-size="11">{escape(labels[0])}</text>'
               f'<text x="{width - 8}" y="{height - 6}" text-anchor="end" font-size="11">{escape(labels[-1])}</text>'
               if labels else "") + "</svg>")


def _trend(cluster: ClusterInsight) -> str:
    if cluster.previous_size == 0:
        return "new" if cluster.size else "—"
    change = (cluster.size - cluster.previous_size) / cluster.previous_size
    return f"{change:+.0%}"


ADMIN_VIEW = "admin view: includes non-public questions"


def html_page(report: InsightsReport | None, *, admin: bool = False) -> str:
    """The report's page: its shared view, where every question not asked in public is masked; for ``admin``, its
    admin view, labelled as such (a report built before there were admin views says it has none)."""
    title = "askflow — what people ask"
    if report is None:
        body = ("<p>No report yet. Run <code>askflow insights</code> or the <code>askflow_question_insights</code> "
                "DAG.</p>")
        return page(title, body)
    banner = ""
    if admin and report.admin_view is not None:
        report, title = report.admin_view, f"{title} ({ADMIN_VIEW})"
        banner = (f'<p class="admin-view"><strong>{escape(ADMIN_VIEW.capitalize())}</strong>: questions asked '
                  "where not everyone may read them, and the pages only some may read, are shown. Do not share it."
                  "</p>")
    elif admin:
        banner = ("<p class='admin-view'>This report was built before reports kept an admin view: the shared view, "
                  "with questions not asked in public masked.</p>")
    gaps = "".join(
        f'<li class="gap"><h3>{escape(g.title)} <small>{g.askers} questions, '
        f'{round(g.unanswered_share * 100)}% unhelped</small></h3><p>{escape(g.finding)}</p>'
        + ("<p>Closest pages: " + ", ".join(f'<a href="{escape(p.url)}">{escape(p.title)}</a>'
                                            for p in g.closest_pages) + "</p>" if g.closest_pages else "")
        + "</li>" for g in report.gaps) or "<li>No coverage gaps: most answers in every cluster helped.</li>"
    rows = "".join(
        f'<tr><td><strong>{escape(c.title)}</strong>'
        + (f'<br><small>{escape(c.label)}</small>' if c.name else "")
        + "<ul class='questions'>" + "".join(f"<li>{escape(q)}</li>" for q in c.representatives) + "</ul></td>"
        f"<td>{c.size}</td><td>{_trend(c)}</td><td>{c.rated_up} / {c.rated_down}</td>"
        f"<td>{round(c.unanswered_share * 100)}%</td><td>{'' if c.confidence is None else f'{c.confidence:.2f}'}</td>"
        "<td>" + ", ".join(f'<a href="{escape(p.url)}">{escape(p.title)}</a> ({p.count})' for p in c.top_pages)
        + "</td></tr>" for c in report.clusters)
    body = banner + (
        f"<p>{report.requests} questions from {report.period_start:%Y-%m-%d %H:%M} to "
        f"{report.period_end:%Y-%m-%d %H:%M} UTC; {report.clustered} in {len(report.clusters)} clusters, "
        f"{report.noise} on their own. Labels: {escape(report.naming)}.</p>"
        f"<h2>Questions per day</h2>{chart_svg(report)}"
        f'<h2>Coverage gaps</h2><ol class="gaps">{gaps}</ol>'
        "<h2>Clusters</h2><div class='scroll'><table><thead><tr><th>What people ask</th><th>Questions</th>"
        "<th>Trend</th><th>Rated up / down</th><th>Unhelped</th><th>Source match</th><th>Pages cited</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>")
    return page(title, body)


def page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>
body {{ margin: 0 auto; max-width: 60rem; padding: 1rem; font: 16px/1.5 system-ui, sans-serif; color: #1d2430; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.2rem; margin-top: 2rem; }} h3 {{ font-size: 1.05rem; margin: 0; }}
.chart {{ width: 100%; height: auto; }} .legend {{ list-style: none; padding: 0; display: flex; flex-wrap: wrap;
gap: .25rem 1rem; }} .swatch {{ display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem;
border-radius: 2px; }} .gap {{ margin: .75rem 0; }} small {{ color: #5b6577; font-weight: 400; }}
.scroll {{ overflow-x: auto; }} table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; vertical-align: top; padding: .4rem; border-bottom: 1px solid #d9dee8; }}
.questions {{ margin: .25rem 0 0; padding-left: 1.1rem; font-size: .9rem; color: #5b6577; }}
a {{ color: #0b5fff; overflow-wrap: anywhere; }}
.admin-view {{ border: 2px solid #d1495b; border-radius: 6px; padding: .5rem .75rem; background: #fdf1f2; }}
</style></head>
<body><h1>{escape(title)}</h1>{body}</body></html>
"""


def csv_text(report: InsightsReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["cluster", "name", "label", "questions", "previous", "rated_up", "rated_down", "failed_share",
                     "dont_know_share", "low_confidence_share", "confidence", "unanswered_share", "gap",
                     "representatives", "top_pages"])
    for c in report.clusters:
        writer.writerow([c.cluster, c.name or "", c.label, c.size, c.previous_size, c.rated_up, c.rated_down,
                         c.failed_share, c.dont_know_share, c.low_confidence_share, c.confidence, c.unanswered_share,
                         c.gap, " | ".join(c.representatives), " | ".join(p.url for p in c.top_pages)])
    return out.getvalue()


def table_text(report: InsightsReport) -> str:
    lines = [f"{report.requests} questions, {report.period_start:%Y-%m-%d} to {report.period_end:%Y-%m-%d}: "
             f"{len(report.clusters)} clusters, {report.noise} on their own", "",
             f"{'questions':>9}  {'trend':>6}  {'unhelped':>8}  what people ask"]
    for c in report.clusters:
        lines.append(f"{c.size:>9}  {_trend(c):>6}  {round(c.unanswered_share * 100):>7}%  {c.title}"
                     + ("  [GAP]" if c.gap else ""))
    lines += ["", "Coverage gaps:"] + [f"  {n}. {g.finding}" for n, g in enumerate(report.gaps, 1)] \
        if report.gaps else ["", "Coverage gaps: none"]
    return "\n".join(lines)
