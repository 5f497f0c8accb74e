"""The public HTTPS function: the asking API and the web page, with its routes and its gate.

``POST /requests`` · ``GET /requests/{id}`` · ``POST /requests/{id}/feedback`` · ``POST /requests/{id}/escalate``
· ``GET /requests?good=true``, the web page at ``/`` and a stored answer's page at ``/answers/{id}``. The admin
pages (``/admin``, ``/insights``) are another function's (``admin_api``): no route here. Every error is a JSON
``{"error": ...}``; no stack trace leaves here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from werkzeug.routing import Rule

from askflow.domain.audiences import Viewer
from askflow.domain.errors import Forbidden, InvalidInput, NotFound
from askflow.entrypoints.credentials import caller, session_cookie
from askflow.entrypoints.http_bodies import parse
from askflow.entrypoints.http_routing import PAGE_HEADERS, answered, no_route, route_map, serve
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion, RateAnswer

ASKER_TOKEN = "X-Asker-Token"  # who asked (the web page keeps one per browser): follow-ups and ratings need it

ROUTES = route_map([
    Rule("/", methods=["GET"], endpoint="page"),
    Rule("/index.html", methods=["GET"], endpoint="page"),
    Rule("/assets/<path:name>", methods=["GET"], endpoint="page"),
    Rule("/requests", methods=["GET"], endpoint="feed"),
    Rule("/requests", methods=["POST"], endpoint="ask"),
    Rule("/requests/<request_id:request_id>", methods=["GET"], endpoint="read"),
    Rule("/requests/<request_id:request_id>/feedback", methods=["POST"], endpoint="rate"),
    Rule("/requests/<request_id:request_id>/escalate", methods=["POST"], endpoint="escalate"),
    Rule("/answers/<request_id:request_id>", methods=["GET"], endpoint="answer_page"),
])


def handle(request, components) -> tuple[str | bytes, int, dict[str, str]]:
    """The API function: the web page (public), then the JSON API (behind ``X-API-Key`` when one is set).

    :param request: a ``flask.Request`` as functions-framework passes it.
    """
    return serve(request, ROUTES, lambda endpoint, arguments, allowed: _handle(request, components, endpoint,
                                                                               arguments, allowed))


def _handle(request, components, endpoint, arguments, allowed):
    headers = {"Content-Type": "application/json"}
    if endpoint == "page":
        from askflow.web import static_response

        body, status, page_headers = static_response(arguments.get("name", "index.html"))
        settings = components.settings
        if status == 200 and (settings.api_key is not None or settings.api_keys) and not arguments.get("name"):
            page_headers = page_headers | {"Set-Cookie": session_cookie(request, settings),
                                           "Cache-Control": "no-store"}
        return body, status, page_headers
    who = caller(request, components.settings, groups=lambda: components.group_directory)
    if endpoint == "answer_page":  # a page anyone may open: what it shows depends on who
        return answered(lambda: answer_page(request, components, viewer=who.viewer, **arguments), headers)
    if not who.may_ask:
        return json.dumps({"error": "missing or wrong API key (X-API-Key)"}), 401, headers
    if endpoint is None:
        return no_route(request, allowed, headers)
    return answered(lambda: _ENDPOINTS[endpoint](request, components, viewer=who.viewer, **arguments), headers)


def _feed(request, components, *, viewer: Viewer) -> tuple[int, dict[str, Any]]:
    if request.args.get("good") != "true" or set(request.args) - {"good"}:
        raise InvalidInput("listing requests needs good=true (the homepage feed), and nothing else")
    good = handlers.recent_good_answers(requests=components.requests)
    # what is listed is what was verified: the team's answer, when a person answered
    return 200, {"items": [handlers.public_view(r, handlers.FEED_PUBLIC_FIELDS) | {"answer": r.served_answer}
                           for r in good]}


def _ask(request, components, *, viewer: Viewer) -> tuple[int, dict[str, Any]]:
    queued, token = handlers.submit_question(parse(request, AskQuestion), requests=components.requests,
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
    return 200, handlers.rate_as_asker(request_id, parse(request, RateAnswer), requests=components.requests,
                                       asker_token=request.headers.get(ASKER_TOKEN))


def answer_page(request, components, *, viewer: Viewer, request_id: str) -> tuple[str, int, dict[str, str]]:
    """A stored answer's page: a public answer for anyone, another for admins only (404 to anyone else, as an
    unknown id)."""
    from askflow.web.answers import answer_page as render

    if request.args:
        raise InvalidInput("an answer's page takes no parameters")
    stored = components.requests.get(request_id)
    if stored is None or not stored.terminal or not stored.readable_by(viewer):
        raise NotFound(f"no answer {request_id}")
    original = components.settings.answer_page(stored.cached_from) if stored.cached_from else None
    return render(stored, original_link=original), 200, PAGE_HEADERS


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


_ENDPOINTS = {"feed": _feed, "ask": _ask, "read": _read, "rate": _rate, "escalate": _escalate}
