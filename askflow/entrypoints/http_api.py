"""The HTTPS API: routing, request parsing and the mapping of domain errors to status codes.

``POST /requests`` · ``GET /requests/{id}`` · ``POST /requests/{id}/feedback`` · ``GET /requests?good=true``,
and the web page at ``/``. Every error is a JSON ``{"error": ...}``; no stack trace leaves here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from pydantic import ValidationError

from askflow.domain.errors import AskflowError, Conflict, InvalidInput, NotFound
from askflow.service_layer import handlers

log = logging.getLogger(__name__)
_REQUEST_PATH = re.compile(r"^/requests/(?P<request_id>[A-Za-z0-9_-]{1,64})(?P<feedback>/feedback)?/?$")
MAX_BODY_BYTES = 64 * 1024


def handle(request, components) -> tuple[str | bytes, int, dict[str, str]]:
    """:param request: a ``flask.Request`` as functions-framework passes it."""
    if request.method == "GET":
        from askflow.web import static_response

        page = static_response(request.path)
        if page is not None:
            return page
    headers = {"Content-Type": "application/json"}
    if not _authenticated(request, components.settings):
        return json.dumps({"error": "missing or wrong API key (X-API-Key)"}), 401, headers
    try:
        status, body = _route(request, components)
    except _MethodNotAllowed as error:
        status, body = 405, {"error": f"{request.method} not allowed on {request.path}"}
        headers["Allow"] = ", ".join(error.allowed)
    except InvalidInput as error:
        status, body = 400, {"error": str(error)}
    except NotFound as error:
        status, body = 404, {"error": str(error)}
    except Conflict as error:
        status, body = 409, {"error": str(error)}
    except AskflowError as error:
        log.warning("request failed: %s", error)
        status, body = 503, {"error": str(error)}
    except Exception:
        log.exception("unexpected error")
        status, body = 500, {"error": "internal error"}
    return json.dumps(body, default=_json_default), status, headers


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


def _authenticated(request, settings) -> bool:
    if settings.api_key is None:
        return True
    import hmac

    sent = request.headers.get("X-API-Key", "")
    return hmac.compare_digest(sent.encode(), settings.api_key.get_secret_value().encode())


class _MethodNotAllowed(Exception):
    def __init__(self, *allowed: str) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


def _route(request, components) -> tuple[int, dict[str, Any]]:
    path = request.path.rstrip("/") or "/"
    if path == "/requests":
        if request.method == "GET":
            if request.args.get("good") != "true" or set(request.args) - {"good"}:
                raise InvalidInput("listing requests needs good=true (the homepage feed), and nothing else")
            return 200, handlers.recent_good_answers(requests=components.requests)
        if request.method != "POST":
            raise _MethodNotAllowed("GET", "POST")
        command = _parse(request, handlers.AskQuestion)
        return 202, handlers.submit_question(
            command, requests=components.requests, events=components.events, settings=components.settings
        )
    match = _REQUEST_PATH.match(request.path)
    if match and match["feedback"]:
        if request.method != "POST":
            raise _MethodNotAllowed("POST")
        command = _parse(request, handlers.RateAnswer)
        return 200, handlers.rate_answer(match["request_id"], command, requests=components.requests)
    if match:
        if request.method != "GET":
            raise _MethodNotAllowed("GET")
        return 200, handlers.get_request(
            match["request_id"], requests=components.requests, settings=components.settings
        )
    return 404, {"error": f"no route {request.method} {request.path}"}


def _parse(request, model):
    if request.mimetype != "application/json":
        raise InvalidInput("Content-Type must be application/json")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise InvalidInput(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        payload = json.loads(request.get_data(cache=True) or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInput(f"body is not valid JSON: {error}") from error
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


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
