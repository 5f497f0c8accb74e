"""What the HTTPS functions share (the asking API, ``http_api``; the admin pages, ``admin_api``): their routes'
request-id converter, matching a request to a route inside a server span, the mapping of domain errors to status
codes, and the headers of the HTML pages. Each function has its own routes and its own gate: no credential one
function accepts opens the other's pages by being accepted there."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from werkzeug.exceptions import MethodNotAllowed
from werkzeug.exceptions import NotFound as NoRoute
from werkzeug.routing import BaseConverter, Map, RequestRedirect, Rule

from askflow import tracing
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
from askflow.domain.model import REQUEST_ID_PATTERN
from askflow.entrypoints.http_bodies import unread_body_response

log = logging.getLogger(__name__)
Response = tuple  # (body, status, headers): a str, bytes or iterator body

INSIGHTS_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                               "form-action 'none'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}
PAGE_HEADERS = INSIGHTS_HEADERS | {  # the review queue and the sign-in post their forms to this origin
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'"}


class RequestIdConverter(BaseConverter):
    """A request id as the stores can hold it: never Firestore's reserved ``__...__`` (no route: 404)."""

    regex = REQUEST_ID_PATTERN


def route_map(rules: Sequence[Rule]) -> Map:
    return Map(
        list(rules),
        strict_slashes=False,
        merge_slashes=False,  # "/requests//feedback" is no route, not a redirect
        converters={"request_id": RequestIdConverter},
    )


def serve(request, routes: Map, respond: Callable[[str | None, dict, list[str]], Response]) -> Response:
    """Match ``request`` to one of ``routes`` and hand ``respond`` its endpoint (``None``: no route), the route's
    arguments and, when only the method is wrong, the methods allowed; inside a server span named by the route."""
    allowed: list[str] = []
    try:
        endpoint, arguments = routes.bind("", url_scheme=request.scheme).match(request.path, method=request.method)
    except MethodNotAllowed as error:
        endpoint, arguments = None, {}
        allowed = error.valid_methods or []
    except (NoRoute, RequestRedirect):
        endpoint, arguments, allowed = None, {}, []
    name = f"{request.method} {_route(routes, endpoint, request)}" if tracing.enabled() else ""
    with tracing.span(name, kind="server",
                      parent=dict(request.headers), attributes={
                          "http.request.method": request.method, "url.path": request.path}) as current:
        body, status, headers = respond(endpoint, arguments, allowed)
        tracing.annotate(current, {"http.response.status_code": status})
        return body, status, headers


def _route(routes: Map, endpoint: str | None, request) -> str:
    """A span's name: the route, never a request id (every id would be a name of its own)."""
    for rule in routes.iter_rules():
        if rule.endpoint == endpoint and request.method in (rule.methods or ()):
            return rule.rule
    return "unmatched"


def no_route(request, allowed: list[str], headers: dict[str, str]) -> Response:
    """A 405 naming the methods allowed, or a 404."""
    if allowed:
        return (json.dumps({"error": f"{request.method} not allowed on {request.path}"}), 405,
                headers | {"Allow": ", ".join(allowed)})
    return json.dumps({"error": f"no route {request.method} {request.path}"}), 404, headers


def answered(call: Callable[[], Response | tuple[int, dict]], headers: dict[str, str]) -> Response:
    """What ``call`` returns — a whole response, or ``(status, body)`` sent as JSON — with every domain error as
    its status code and a JSON ``{"error": ...}``: no stack trace leaves here."""
    try:
        result = call()
        if len(result) == 3:
            return result
        status, body = result
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
        headers = headers | {"Retry-After": str(error.retry_after_s)}
    except AskflowError as error:
        log.warning("request failed: %s", error)
        status, body = 503, {"error": str(error)}
    except Exception:
        log.exception("unexpected error")
        status, body = 500, {"error": "internal error"}
    if status in (408, 413):
        return unread_body_response(body, headers, status=status)
    return json.dumps(body), status, headers
