"""Cloud Functions entry points. Thin: parse at the edge, hand to askflow's handlers.

Nothing is built at import time: the components are created on the first call of each instance.
"""

from __future__ import annotations

import functools

import functions_framework


@functools.cache
def components():
    from askflow.bootstrap import bootstrap

    return bootstrap()


@functions_framework.errorhandler(404)
def not_found(error):
    """Paths Flask's router itself refuses (control characters) get the same JSON error as the API's own 404s."""
    return {"error": "not found"}, 404


@functions_framework.http
def api(request):
    """HTTPS: POST /requests, GET /requests/{id}."""
    from askflow.entrypoints import http_api

    return http_api.handle(request, components())


@functions_framework.http
def slack_events(request):
    """HTTPS: Slack Events API and interactivity (signed requests; answers come from the worker)."""
    from askflow.entrypoints import slack_app

    return slack_app.handle(request, components())


@functions_framework.http
def requeue_unfinished(request):
    """HTTPS, private (Cloud Scheduler with an OIDC token): queue again what waited too long, fail what is late."""
    from askflow.entrypoints import http_api

    return http_api.handle_requeue(request, components())


@functions_framework.cloud_event
def answer_worker(cloud_event):
    """Pub/Sub (questions topic): answer one request."""
    from askflow.entrypoints import events

    events.on_question(cloud_event, components())


@functions_framework.cloud_event
def request_written(cloud_event):
    """Firestore (requests/{id} written, via Eventarc): queue an evaluation event when grading is due."""
    from askflow.entrypoints import events

    events.on_request_written(cloud_event, components())
