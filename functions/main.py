"""Cloud Functions entry points. Thin: each hands its request or event to ``askflow.entrypoints``.

Nothing is built at import time: the components are created on the first call of each instance. A bad setting
answers 500 with a JSON error and logs which setting and why.
"""

from __future__ import annotations

import functools
import logging
import os

import functions_framework

from askflow.domain.errors import ConfigurationError

log = logging.getLogger(__name__)


@functools.cache
def components():
    from askflow.bootstrap import bootstrap

    return bootstrap()


@functools.cache
def slack_app():
    from askflow.entrypoints.slack_app import build_app

    return build_app(components())


@functions_framework.errorhandler(404)
def not_found(error):
    """Paths Flask's router itself refuses (control characters) get the same JSON error as the API's own 404s."""
    return {"error": "not found"}, 404


@functions_framework.errorhandler(ConfigurationError)
def misconfigured(error):
    log.error("askflow is misconfigured: %s", error)
    return {"error": "askflow is misconfigured; the function's log says which setting"}, 500


@functions_framework.http
def api(request):
    """HTTPS, public: the JSON API (ask, read a request, rate it, the feed of good answers) and the web page."""
    from askflow.entrypoints import http_api

    return http_api.handle(request, components())


@functions_framework.http
def admin(request):
    """HTTPS, behind IAM or IAP: the admin page, the review queue, the admin sign-in and the question insights."""
    from askflow.entrypoints import admin_api

    return admin_api.handle(request, components())


@functions_framework.http
def slack_events(request):
    """HTTPS: Slack Events API and interactivity (signed requests; answers come from the worker)."""
    from askflow.entrypoints import slack_app as slack

    return slack.handle(request, slack_app())


@functions_framework.http
def requeue_unfinished(request):
    """HTTPS, private (Cloud Scheduler with an OIDC token): queue again what waited too long, fail what is late."""
    from askflow.entrypoints import requeue_api

    return requeue_api.handle(request, components())


@functools.cache
def mcp_endpoint():
    from askflow.entrypoints.mcp_server import McpEndpoint

    return McpEndpoint(components())


# Only mcp is an async (ASGI) function: the others skip functions-framework's async side (starlette, about 0.03 s of
# every cold start). functions-framework puts the target in FUNCTION_TARGET before it loads this file.
if os.environ.get("FUNCTION_TARGET", "mcp") == "mcp":
    import functions_framework.aio

    @functions_framework.aio.http
    async def mcp(request):
        """HTTPS: the MCP server for coding agents (streamable HTTP, stateless): search, fetch, ask."""
        from askflow.entrypoints.mcp_server import Delegated

        return Delegated(mcp_endpoint())


@functions_framework.cloud_event
def answer_worker(cloud_event):
    """Pub/Sub (questions topic): answer one request."""
    from askflow.entrypoints import events

    events.on_question(cloud_event, components())


@functions_framework.cloud_event
def request_written(cloud_event):
    """Firestore (requests/{id} written, via Eventarc): queue a grading event when grading is due."""
    from askflow.entrypoints import events

    events.on_request_written(cloud_event, components())
