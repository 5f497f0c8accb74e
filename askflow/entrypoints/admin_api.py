"""The admin HTTPS function: the admin page, the review queue, the admin sign-in and the question insights, with
routes and a gate of their own (deployed as its own Cloud Function, ``admin``, behind IAM or IAP).

``GET /admin`` · ``GET|POST /admin/login`` · ``GET /admin/review`` · ``POST /admin/review/{id}`` ·
``GET /insights`` · ``GET /answers/{id}`` (a stored answer's page, which the admin pages link to) ·
``GET /admin/lineage/{id}`` (where a request's answer came from) · ``GET /admin/lineage?document=DOC_ID`` (the answers
that drew on a document). Every page but
the sign-in needs a credential this function accepts (``credentials.caller``): the admin pages an admin's, the
insights any key's or IAP's (its shared view, masked; an admin's: its admin view). The web page's session cookie,
the public function's, opens none of them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import Counter

from werkzeug.routing import Rule

from askflow.domain.errors import Forbidden, InvalidInput, NotFound
from askflow.entrypoints.credentials import caller
from askflow.entrypoints.http_api import answer_page
from askflow.entrypoints.http_bodies import MAX_BODY_BYTES, parse, read_body
from askflow.entrypoints.http_routing import INSIGHTS_HEADERS, PAGE_HEADERS, answered, no_route, route_map, serve
from askflow.service_layer import handlers
from askflow.service_layer.commands import ReviewDecision

ADMIN_MAX_DAYS, ADMIN_MAX_REQUESTS = 31, 20_000  # what one view of the admin page may scan
ADMIN_ESCALATIONS = 50  # the latest escalations the admin page lists
REVIEW_QUEUE_SHOWN, AUDIT_SHOWN = 100, 50

ROUTES = route_map([
    Rule("/insights", methods=["GET"], endpoint="insights"),
    Rule("/admin", methods=["GET"], endpoint="admin"),
    Rule("/admin/login", methods=["GET", "POST"], endpoint="login"),
    Rule("/admin/review", methods=["GET"], endpoint="review"),
    Rule("/admin/review/<request_id:request_id>", methods=["POST"], endpoint="decide"),
    Rule("/answers/<request_id:request_id>", methods=["GET"], endpoint="answer_page"),
    Rule("/admin/lineage/<request_id:request_id>", methods=["GET"], endpoint="lineage"),
    Rule("/admin/lineage", methods=["GET"], endpoint="document_lineage"),
])
ADMIN_ONLY = ("admin", "review", "decide", "answer_page", "lineage", "document_lineage")


def serves(path: str) -> bool:
    """Whether ``path`` is this function's (the local stack serves both functions on one origin)."""
    return path in ("/insights", "/admin") or path.startswith(("/insights/", "/admin/"))


def handle(request, components) -> tuple[str | bytes, int, dict[str, str]]:
    """The admin function.

    :param request: a ``flask.Request`` as functions-framework passes it.
    """
    return serve(request, ROUTES, lambda endpoint, arguments, allowed: _handle(request, components, endpoint,
                                                                               arguments, allowed))


def _handle(request, components, endpoint, arguments, allowed):
    headers = {"Content-Type": "application/json"}
    who = caller(request, components.settings, groups=lambda: components.group_directory)
    if endpoint == "login":  # the sign-in form: anyone may open it
        return answered(lambda: _login(request, components), headers)
    if not who.may_ask:
        return json.dumps({"error": "missing or wrong API key (X-API-Key)"}), 401, headers
    if endpoint is None:
        return no_route(request, allowed, headers)
    if endpoint in ADMIN_ONLY and not who.viewer.admin:
        return json.dumps({"error": "the admin page needs an admin credential: the admin API key (X-API-Key), "
                                    "or an admin's identity behind IAP"}), 403, headers
    if endpoint == "insights" and who.via == "session":
        return json.dumps({"error": "the insights page needs an API key (X-API-Key) or IAP, not the web page's "
                                    "session"}), 403, headers
    if endpoint == "insights":
        return answered(lambda: _insights(request, components, admin=who.viewer.admin), headers)
    if endpoint == "admin":
        return answered(lambda: _admin(request, components), headers)
    if endpoint == "review":
        return answered(lambda: _review(request, components, who=who), headers)
    if endpoint == "decide":
        return answered(lambda: _decide(request, components, who=who, **arguments), headers)
    if endpoint in ("lineage", "document_lineage"):
        return answered(lambda: _lineage(request, components, **arguments), headers)
    return answered(lambda: answer_page(request, components, viewer=who.viewer, **arguments), headers)


def _insights(request, components, *, admin: bool) -> tuple[str, int, dict[str, str]]:
    """The latest question-insights report (or ``?report=ID``) as a page: HTML rendered here, no script. A shared
    place: the report masks every question not asked in public (``AskedQuestion.of``) for anyone but an ``admin``,
    who gets its admin view, labelled as one."""
    from askflow.insights.render import html_page

    if set(request.args) - {"report"}:
        raise InvalidInput("the insights page takes only report=ID")
    wanted = request.args.get("report")
    if wanted is not None and (len(wanted) > 64 or not wanted.replace("T", "").replace("-", "").isdigit()):
        raise InvalidInput("report: an id like 20261116T0000-20261123T0000")
    reports = components.insights_reports
    report = reports.get(wanted) if wanted else reports.latest()
    if wanted and report is None:
        raise NotFound(f"no insights report {wanted}")
    return html_page(report, admin=admin), 200, INSIGHTS_HEADERS


def _admin(request, components) -> tuple[str, int, dict[str, str]]:
    """The admin page: the last ``days`` days (7 unless asked) of figures, and the latest requests' traces."""
    from askflow.domain.clock import utcnow
    from askflow.service_layer.stats import usage_stats
    from askflow.web.admin import admin_page

    if set(request.args) - {"days"}:
        raise InvalidInput("the admin page takes only days=N")
    days = request.args.get("days", "7")
    if not days.isdigit() or not 1 <= int(days) <= ADMIN_MAX_DAYS:
        raise InvalidInput(f"days: a whole number from 1 to {ADMIN_MAX_DAYS}")
    end = utcnow()
    start = end - dt.timedelta(days=int(days))
    # a view reads at most ADMIN_MAX_REQUESTS requests (``askflow stats`` reads any period whole)
    scanned = list(itertools.islice(components.requests.created_between(start, end), ADMIN_MAX_REQUESTS))
    stats = usage_stats(scanned, start=start, end=end)
    served = Counter(r.cached_from for r in scanned if r.cached_from)  # how often each answer was served again
    s = components.settings
    link = (f"https://console.cloud.google.com/traces/list?project={s.project_id}&tid={{trace_id}}"
            if s.tracing == "gcp" else None)
    return admin_page(stats, trace_link=link, escalations=components.requests.escalations(ADMIN_ESCALATIONS),
                      served_again=served), 200, INSIGHTS_HEADERS


def _lineage(request, components, *, request_id: str | None = None) -> tuple[str, int, dict[str, str]]:
    """A request's lineage (``/admin/lineage/{id}``), or a document's (``/admin/lineage?document=DOC_ID``), as
    ``askflow lineage`` gives them."""
    from askflow.service_layer.lineage import document_lineage, request_lineage
    from askflow.web.admin import document_lineage_page, lineage_page

    if request_id is not None:
        if request.args:
            raise InvalidInput("a request's lineage takes no parameters")
        return lineage_page(request_lineage(request_id, requests=components.requests,
                                            store=components.store)), 200, INSIGHTS_HEADERS
    if set(request.args) != {"document"}:
        raise InvalidInput("the lineage page takes document=DOC_ID (or is a request's: /admin/lineage/ID)")
    report = document_lineage(request.args["document"], requests=components.requests, store=components.store)
    return document_lineage_page(report), 200, INSIGHTS_HEADERS


def _login(request, components) -> tuple[str, int, dict[str, str]]:
    """The admin sign-in: a form for the admin key (GET), the admin cookie for an admin key (POST, then to the
    review queue). A key in a form is no worse than in a header: it is posted, never put in a URL."""
    from askflow.entrypoints.credentials import admin_cookie, keyed
    from askflow.web.answers import login_page

    if request.method == "GET":
        return login_page(), 200, PAGE_HEADERS
    if request.mimetype != "application/x-www-form-urlencoded":
        raise InvalidInput("the sign-in posts a form (application/x-www-form-urlencoded)")
    read_body(request, MAX_BODY_BYTES)
    key = keyed(request.form.get("key", ""), components.settings) if request.form.get("key") else None
    if key is None or not key.viewer.admin:
        return login_page(failed=True), 403, PAGE_HEADERS
    return "", 303, {"Location": "/admin/review", "Set-Cookie": admin_cookie(request, components.settings, key.name),
                     "Cache-Control": "no-store"}


def _review(request, components, *, who) -> tuple[str, int, dict[str, str]]:
    from askflow.entrypoints.credentials import csrf_token
    from askflow.web.answers import review_page

    if request.args:
        raise InvalidInput("the review queue takes no parameters")
    csrf = csrf_token(who, components.settings) or None  # no admin key and no ASKFLOW_ADMIN_SECRET: no forms
    return review_page(components.requests.review_queue(REVIEW_QUEUE_SHOWN),
                       components.requests.audit_log(AUDIT_SHOWN), csrf=csrf), 200, PAGE_HEADERS


def _decide(request, components, *, who, request_id: str):
    """A reviewer's decision: the queue's form (``decision`` approve or turn-down, with its ``csrf`` token: a
    browser sends the reviewer's cookie or IAP's by itself), or JSON ``{"approved": bool}`` with an admin key in
    ``X-API-Key`` (a header no other site can make a browser send)."""
    from askflow.entrypoints.credentials import csrf_ok

    if request.mimetype == "application/json" and who.via == "key":
        approved = parse(request, ReviewDecision).approved
    elif request.mimetype == "application/x-www-form-urlencoded":
        read_body(request, MAX_BODY_BYTES)
        if not csrf_ok(request, who, components.settings, request.form.get("csrf", "")):
            raise Forbidden("the form's token is missing, old or not this reviewer's (reload the review queue)")
        decision = request.form.get("decision")
        if decision not in ("approve", "turn-down"):
            raise InvalidInput("decision: approve or turn-down")
        approved = decision == "approve"
    else:
        raise InvalidInput("a decision is a form from the review queue, or JSON {\"approved\": true} with "
                           "X-API-Key")
    stored = handlers.review_answer(request_id, approved=approved, reviewer=who.name or who.via, via="admin",
                                    requests=components.requests)
    if request.mimetype == "application/json":
        return json.dumps({"request_id": request_id, "approved": approved,
                           "status": stored.status.value}), 200, {"Content-Type": "application/json"}
    return "", 303, {"Location": "/admin/review", "Cache-Control": "no-store"}
