"""Reading an HTTP request's body, for every HTTPS entry point (the asking API, the admin pages, the Slack webhook):
capped whether its length was declared or it came in chunks, timed out when its client stops sending, and parsed
into a command with a message naming each field that is wrong."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from askflow.domain.errors import InvalidInput, TooLarge, TooSlow

MAX_BODY_BYTES = 64 * 1024
BODY_READ_TIMEOUT_S = 10.0  # locally; in production Cloud Run's front end buffers the body before the function


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


def parse(request, model):
    """The JSON body (at most ``MAX_BODY_BYTES``) as ``model``; ``InvalidInput`` saying what is wrong otherwise."""
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
        raise InvalidInput(describe(error)) from error


def describe(error: ValidationError) -> str:
    """A validation error as one line: ``field: problem; other.field: problem``."""
    problems = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "body"
        problems.append(f"{field}: {item['msg']}")
    return "; ".join(problems)


def unread_body_response(body: dict[str, Any], headers: dict[str, str], *, status: int = 413):
    """A 413 (or 408) whose body is an iterator: functions-framework drains the request body after every response
    that is not streamed (``read_request``), which would read the rest of a 100 MB upload, fail on the cap just hit,
    or wait on a client that stopped sending. The connection closes instead."""
    return iter([json.dumps(body)]), status, headers | {"Connection": "close"}
