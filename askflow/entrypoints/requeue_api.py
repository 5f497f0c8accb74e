"""The private HTTPS function of the requeue sweep (Cloud Scheduler posts to it): a role of its own, apart from the
asking API and the admin pages."""

from __future__ import annotations

import json
import logging

from askflow.service_layer import handlers

log = logging.getLogger(__name__)


def handle(request, components) -> tuple[str, int, dict[str, str]]:
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
