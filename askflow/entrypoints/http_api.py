"""The HTTPS API: routing (werkzeug's, which Flask under functions-framework already carries), request parsing and
the mapping of domain errors to status codes.

``POST /requests`` · ``GET /requests/{id}`` · ``POST /requests/{id}/feedback`` · ``GET /requests?good=true``,
the web page at ``/``, the question-insights page at ``/insights`` and the admin page at ``/admin``. Every error
is a JSON ``{"error": ...}``; no stack trace leaves here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections import Counter
from typing import Any

from pydantic import ValidationError
from werkzeug.exceptions import ClientDisconnected, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as NoRoute
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule

from askflow import tracing
from askflow.domain.audiences import Viewer
from askflow.domain.errors import (
    AskflowError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    OverBudget,
    TooLarge,
    TooSlow,
)
from askflow.entrypoints.credentials import caller, session_cookie
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion, RateAnswer, ReviewDecision

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
BODY_READ_TIMEOUT_S = 10.0  # locally; in production Cloud Run's front end buffers the body before the function
ADMIN_MAX_DAYS, ADMIN_MAX_REQUESTS = 31, 20_000  # what one view of the admin page may scan
ADMIN_ESCALATIONS = 50  # the latest escalations the admin page lists
ASKER_TOKEN = "X-Asker-Token"  # who asked (the web page keeps one per browser): follow-ups and ratings need it


class RequestIdConverter(BaseConverter):
    """A request id as the stores can hold it: never Firestore's reserved ``__...__`` (no route: 404)."""

    regex = r"(?!__[A-Za-z0-9_-]*__(?![A-Za-z0-9_-]))[A-Za-z0-9_-]{1,64}"


ROUTES = Map(
    [
        Rule("/", methods=["GET"], endpoint="page"),
        Rule("/index.html", methods=["GET"], endpoint="page"),
        Rule("/assets/<path:name>", methods=["GET"], endpoint="page"),
        Rule("/requests", methods=["GET"], endpoint="feed"),
        Rule("/requests", methods=["POST"], endpoint="ask"),
        Rule("/requests/<request_id:request_id>", methods=["GET"], endpoint="read"),
        Rule("/requests/<request_id:request_id>/feedback", methods=["POST"], endpoint="rate"),
        Rule("/requests/<request_id:request_id>/escalate", methods=["POST"], endpoint="escalate"),
        Rule("/answers/<request_id:request_id>", methods=["GET"], endpoint="answer_page"),
        Rule("/insights", methods=["GET"], endpoint="insights"),
        Rule("/admin", methods=["GET"], endpoint="admin"),
        Rule("/admin/login", methods=["GET", "POST"], endpoint="login"),
        Rule("/admin/review", methods=["GET"], endpoint="review"),
        Rule("/admin/review/<request_id:request_id>", methods=["POST"], endpoint="decide"),
    ],
    strict_slashes=False,
    merge_slashes=False,  # "/requests//feedback" is no route, not a redirect
    converters={"request_id": RequestIdConverter},
)


def handle(request, components) -> tuple[str | bytes, int, dict[str, str]]:
    """The API function: the web page (public), then the JSON API (behind ``X-API-Key`` when one is set).

    :param request: a ``flask.Request`` as functions-framework passes it.
    """
    headers = {"Content-Type": "application/json"}
    allowed: list[str] = []
    try:
        endpoint, arguments = ROUTES.bind("", url_scheme=request.scheme).match(request.path, method=request.method)
    except MethodNotAllowed as error:
        endpoint, arguments = None, {}
        allowed = error.valid_methods or []
    except (NoRoute, RequestRedirect):
        endpoint, arguments, allowed = None, {}, []
    name = f"{request.method} {_route(endpoint, request)}" if tracing.enabled() else ""
    with tracing.span(name, kind="server",
                      parent=dict(request.headers), attributes={
                          "http.request.method": request.method, "url.path": request.path}) as current:
        body, status, headers = _handle(request, components, endpoint, arguments, allowed, headers)
        tracing.annotate(current, {"http.response.status_code": status})
        return body, status, headers


def _route(endpoint: str | None, request) -> str:
    """A span's name: the route, never a request id (every id would be a name of its own)."""
    for rule in ROUTES.iter_rules():
        if rule.endpoint == endpoint and request.method in (rule.methods or ()):
            return rule.rule
    return "unmatched"


def _handle(request, components, endpoint, arguments, allowed, headers):
    if endpoint == "page":
        from askflow.web import static_response

        body, status, page_headers = static_response(arguments.get("name", "index.html"))
        settings = components.settings
        if status == 200 and (settings.api_key is not None or settings.api_keys) and not arguments.get("name"):
            page_headers = page_headers | {"Set-Cookie": session_cookie(request, settings),
                                           "Cache-Control": "no-store"}
        return body, status, page_headers
    who = caller(request, components.settings)
    if endpoint in _PAGES:  # pages anyone may open: what they show depends on who
        try:
            return _PAGES[endpoint](request, components, who=who, **arguments)
        except InvalidInput as error:
            return json.dumps({"error": str(error)}), 400, headers
        except NotFound as error:
            return json.dumps({"error": str(error)}), 404, headers
    if not who.may_ask:
        return json.dumps({"error": "missing or wrong API key (X-API-Key)"}), 401, headers
    if endpoint in ("admin", "review", "decide") and not who.viewer.admin:
        return json.dumps({"error": "the admin page needs an admin credential: the admin API key (X-API-Key), "
                                    "or an admin's identity behind IAP"}), 403, headers
    if endpoint == "insights" and who.via == "session":
        return json.dumps({"error": "the insights page needs an API key (X-API-Key) or IAP, not the web page's "
                                    "session"}), 403, headers
    try:
        if endpoint is None and allowed:
            status, body = 405, {"error": f"{request.method} not allowed on {request.path}"}
            headers["Allow"] = ", ".join(allowed)
        elif endpoint is None:
            status, body = 404, {"error": f"no route {request.method} {request.path}"}
        elif endpoint == "insights":
            return _insights(request, components, viewer=who.viewer)
        elif endpoint == "admin":
            return _admin(request, components)
        elif endpoint == "review":
            return _review(request, components, who=who)
        elif endpoint == "decide":
            return _decide(request, components, who=who, **arguments)
        else:
            status, body = _ENDPOINTS[endpoint](request, components, viewer=who.viewer, **arguments)
    except TooLarge as error:
        status, body = 413, {"error": str(error)}
    except TooSlow as error:
        status, body = 408, {"error": str(error)}
    except InvalidInput as error:
        status, body = 400, {"error": str(error)}
    except Forbidden as error:
        status, body = 403, {"error": str(error)}
    except NotFound as error:
        status, body = 404, {"error": str(error)}
    except Conflict as error:
        status, body = 409, {"error": str(error)}
    except OverBudget as error:
        status, body = 429, {"error": str(error), "limit": error.limit, "retry_after_s": error.retry_after_s}
        headers["Retry-After"] = str(error.retry_after_s)
    except AskflowError as error:
        log.warning("request failed: %s", error)
        status, body = 503, {"error": str(error)}
    except Exception:
        log.exception("unexpected error")
        status, body = 500, {"error": "internal error"}
    if status in (408, 413):
        return unread_body_response(body, headers, status=status)
    return json.dumps(body), status, headers


def unread_body_response(body: dict[str, Any], headers: dict[str, str], *, status: int = 413):
    """A 413 (or 408) whose body is an iterator: functions-framework drains the request body after every response
    that is not streamed (``read_request``), which would read the rest of a 100 MB upload, fail on the cap just hit,
    or wait on a client that stopped sending. The connection closes instead."""
    return iter([json.dumps(body)]), status, headers | {"Connection": "close"}


def _feed(request, components, *, viewer: Viewer) -> tuple[int, dict[str, Any]]:
    if request.args.get("good") != "true" or set(request.args) - {"good"}:
        raise InvalidInput("listing requests needs good=true (the homepage feed), and nothing else")
    good = handlers.recent_good_answers(requests=components.requests)
    # what is listed is what was verified: the team's answer, when a person answered
    return 200, {"items": [handlers.public_view(r, handlers.FEED_PUBLIC_FIELDS) | {"answer": r.served_answer}
                           for r in good]}


def _ask(request, components, *, viewer: Viewer) -> tuple[int, dict[str, Any]]:
    queued, token = handlers.submit_question(_parse(request, AskQuestion), requests=components.requests,
                                             events=components.events, settings=components.settings,
                                             asker_token=request.headers.get(ASKER_TOKEN),
                                             budgets=components.budgets, identities=[client_identity(request)],
                                             viewer=viewer)
    return 202, {"request_id": queued.request_id, "status": queued.status.value, "asker_token": token}


def client_identity(request) -> str:
    """The caller's address as a budget identity (hashed): an asker token costs nothing to make anew, an address
    does. Behind Google's front end the last ``X-Forwarded-For`` entry is the address it saw; a client can only
    prepend to it."""
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    address = forwarded[-1] if forwarded else (request.remote_addr or "unknown")
    return f"address:{hashlib.sha256(address.encode()).hexdigest()[:32]}"


def _read(request, components, *, viewer: Viewer, request_id: str) -> tuple[int, dict[str, Any]]:
    """The public view of a request; one that is not public only for its asker (their token) and admins: to anyone
    else it does not exist (404, as an unknown id)."""
    stored = handlers.get_request(request_id, requests=components.requests, settings=components.settings)
    if not stored.readable_by(viewer, token=request.headers.get(ASKER_TOKEN)):
        raise NotFound(f"no request {request_id}")
    return 200, handlers.public_view(stored)


def _rate(request, components, *, viewer: Viewer, request_id: str) -> tuple[int, dict[str, Any]]:
    return 200, handlers.rate_as_asker(request_id, _parse(request, RateAnswer), requests=components.requests,
                                       asker_token=request.headers.get(ASKER_TOKEN))


INSIGHTS_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                               "form-action 'none'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}


def _insights(request, components, *, viewer: Viewer) -> tuple[str, int, dict[str, str]]:
    """The latest question-insights report (or ``?report=ID``) as a page: HTML rendered here, no script. A shared
    place: the report masks every question not asked in public, for everyone (``AskedQuestion.of``)."""
    from askflow.insights.render import html_page

    if set(request.args) - {"report"}:
        raise InvalidInput("the insights page takes only report=ID")
    wanted = request.args.get("report")
    if wanted is not None and not wanted.replace("T", "").replace("-", "").isdigit():
        raise InvalidInput("report: an id like 20261116T0000-20261123T0000")
    reports = components.insights_reports
    report = reports.get(wanted) if wanted else reports.latest()
    if wanted and report is None:
        raise NotFound(f"no insights report {wanted}")
    return html_page(report), 200, INSIGHTS_HEADERS


def _admin(request, components) -> tuple[str, int, dict[str, str]]:
    """The admin page: the last ``days`` days (7 unless asked) of figures, and the latest requests' traces."""
    import datetime as dt

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


PAGE_HEADERS = INSIGHTS_HEADERS | {  # the review queue and the sign-in post their forms to this origin
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'"}
REVIEW_QUEUE_SHOWN, AUDIT_SHOWN = 100, 50


def _answer_page(request, components, *, who, request_id: str) -> tuple[str, int, dict[str, str]]:
    """A stored answer's page: a public answer for anyone, another for admins only (404 to anyone else, as an
    unknown id)."""
    from askflow.web.answers import answer_page

    if request.args:
        raise InvalidInput("an answer's page takes no parameters")
    stored = components.requests.get(request_id)
    if stored is None or not stored.terminal or not stored.readable_by(who.viewer):
        raise NotFound(f"no answer {request_id}")
    original = components.settings.answer_page(stored.cached_from) if stored.cached_from else None
    return answer_page(stored, original_link=original), 200, PAGE_HEADERS


def _login(request, components, *, who) -> tuple[str, int, dict[str, str]]:
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
    from askflow.entrypoints.credentials import csrf_token, keys_configured
    from askflow.web.answers import review_page

    if request.args:
        raise InvalidInput("the review queue takes no parameters")
    csrf = csrf_token(who, components.settings) if keys_configured(components.settings) else None
    return review_page(components.requests.review_queue(REVIEW_QUEUE_SHOWN),
                       components.requests.audit_log(AUDIT_SHOWN), csrf=csrf), 200, PAGE_HEADERS


def _decide(request, components, *, who, request_id: str):
    """A reviewer's decision: the queue's form (``decision`` approve or turn-down, with its ``csrf`` token: a
    browser sends the reviewer's cookie or IAP's by itself), or JSON ``{"approved": bool}`` with an admin key in
    ``X-API-Key`` (a header no other site can make a browser send)."""
    from askflow.entrypoints.credentials import csrf_ok

    if request.mimetype == "application/json" and who.via == "key":
        approved = _parse(request, ReviewDecision).approved
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


def _escalate(request, components, *, viewer: Viewer, request_id: str) -> tuple[int, dict[str, Any]]:
    """The asker's "ask a person": the question goes to the team (once; README "When askflow is not sure")."""
    from askflow.service_layer.escalation import ask_for_person

    token = request.headers.get(ASKER_TOKEN)
    if not token:
        raise Forbidden("only whoever asked may hand their question to a person (send X-Asker-Token)")
    escalation = ask_for_person(request_id, asker_token=token, requests=components.requests,
                                escalations=getattr(components, "escalations", None), budgets=components.budgets,
                                settings=components.settings)
    return 200, {"request_id": request_id, "escalation": escalation.state,
                 **({"why_not": escalation.why_not} if escalation.why_not else {})}


_PAGES = {"answer_page": _answer_page, "login": _login}
_ENDPOINTS = {"feed": _feed, "ask": _ask, "read": _read, "rate": _rate, "escalate": _escalate}


def handle_requeue(request, components) -> tuple[str, int, dict[str, str]]:
    """``POST`` runs the requeue sweep once and returns its summary. The function is private: Cloud Run checks the
    caller's (Cloud Scheduler's) OIDC token before a request gets here."""
    headers = {"Content-Type": "application/json"}
    if request.method != "POST":
        return json.dumps({"error": f"{request.method} not allowed; POST runs the sweep"}), 405, headers | {
            "Allow": "POST"}
    try:
        summary = handlers.requeue_unfinished(requests=components.requests, events=components.events,
                                              settings=components.settings)
    except Exception:
        log.exception("requeue sweep failed")
        return json.dumps({"error": "internal error"}), 500, headers
    return json.dumps(summary), 200, headers


def read_body(request, limit: int) -> bytes:
    """The body, read with a cap whether its length was declared or it came in chunks: past ``limit`` bytes
    reading stops (``TooLarge``), so a 100 MB upload never reaches memory.

    A chunked body is read from the server's own input stream (gunicorn de-chunks it): werkzeug reads a body of
    no declared length only from servers that say they end the stream (``wsgi.input_terminated``), which gunicorn
    does not, so through it a chunked body would read as empty."""
    socket = request.environ.get("gunicorn.socket")
    if socket is not None:  # a client that stops sending holds a server thread no longer than this
        socket.settimeout(BODY_READ_TIMEOUT_S)
    try:
        if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            data = request.environ["wsgi.input"].read(limit + 1)
            if len(data) > limit:
                raise TooLarge(f"body larger than {limit} bytes")
            return data
        request.max_content_length = limit
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise TooLarge(f"body larger than {limit} bytes") from None
    except (TimeoutError, ClientDisconnected):
        raise TooSlow(f"the body did not arrive within {BODY_READ_TIMEOUT_S:.0f} s") from None


def _parse(request, model):
    if request.mimetype != "application/json":
        raise InvalidInput("Content-Type must be application/json")
    body = read_body(request, MAX_BODY_BYTES)
    try:
        payload = json.loads(body or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"body is not valid JSON: {error}") from error
    except RecursionError:
        raise InvalidInput("body is not valid JSON: nested too deeply") from None
    if not isinstance(payload, dict):
        raise InvalidInput("body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise InvalidInput(_describe(error)) from error


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "body"
        problems.append(f"{field}: {item['msg']}")
    return "; ".join(problems)
