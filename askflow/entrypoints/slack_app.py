"""The Slack app (slack_bolt): Events API and interactivity on one HTTPS endpoint.

Bolt verifies the signature and timestamp (401 when bad or stale) and answers ``url_verification``. A mention or a
direct message becomes a request queued for the answer worker, never answered inside the webhook call. The request
id derives from Slack's event id, so Slack's retries (``X-Slack-Retry-Num``) and duplicates map to the one request.
"""

from __future__ import annotations

import json
import logging

from askflow.adapters.slack_replies import FRESH, RATE_DOWN, RATE_UP, WORKING, question_text
from askflow.domain.errors import ConfigurationError, Duplicate
from askflow.domain.model import SlackThread
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion, RateAnswer

log = logging.getLogger(__name__)


def build_app(components):
    """The Bolt app over the components' Slack client and stores (built once per instance by the function)."""
    from slack_bolt import App

    settings = components.settings
    if components.slack_client is None or settings.slack_signing_secret is None:
        raise ConfigurationError("the Slack app needs ASKFLOW_SLACK_BOT_TOKEN and ASKFLOW_SLACK_SIGNING_SECRET")
    app = App(
        client=components.slack_client,
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        process_before_response=True,  # a function has no life after the response: work, then answer fast
        token_verification_enabled=False,
        ignoring_self_events_enabled=True,
    )
    replies = components.slack_replies

    def queue(event: dict, body: dict) -> None:
        question = question_text(event.get("text", ""))
        if not question:
            return
        thread_ts = event.get("thread_ts") or event["ts"]
        try:
            handlers.submit_question(
                AskQuestion(question=question[: settings.max_question_chars],
                            thread_id=f"slack-{event['channel']}-{thread_ts}".replace(".", "_")),
                requests=components.requests, events=components.events, settings=settings,
                request_id=f"slack-{body['event_id']}",
                slack=SlackThread(channel=event["channel"], ts=event["ts"], thread_ts=thread_ts,
                                  user=event.get("user"), in_thread="thread_ts" in event),
            )
        except Duplicate:
            log.info("Slack event %s already queued (a retry)", body["event_id"])
            return
        replies.mark(event["channel"], event["ts"], add=WORKING)

    @app.event("app_mention")
    def on_mention(event, body):
        queue(event, body)

    @app.event("message")
    def on_message(event, body):
        if event.get("channel_type") == "im" and not event.get("subtype") and not event.get("bot_id"):
            queue(event, body)

    def rate(positive: bool):
        def handler(ack, body, action):
            ack()
            handlers.rate_answer(action["value"], RateAnswer(positive=positive, rater=f"slack-{body['user']['id']}"),
                                 requests=components.requests)

        return handler

    @app.action(FRESH)
    def fresh(ack, action):
        """The question of an answer served from the cache, asked again in its thread and answered anew; a second
        click maps to the same request."""
        ack()
        served = components.requests.get(action["value"])
        if served is None or served.slack is None:
            return
        try:
            handlers.submit_question(
                AskQuestion(question=served.question, thread_id=served.thread_id, fresh=True),
                requests=components.requests, events=components.events, settings=settings,
                request_id=f"{served.request_id}-fresh", slack=served.slack)
        except Duplicate:
            log.info("fresh answer to %s already queued", served.request_id)

    app.action(RATE_UP)(rate(True))
    app.action(RATE_DOWN)(rate(False))
    return app


def handle(request, app):
    """Bolt's handler, after refusing bodies Bolt would crash on (a signed but broken JSON body is a 400)."""
    from slack_bolt.adapter.google_cloud_functions import SlackRequestHandler

    if request.method == "POST" and request.mimetype == "application/json":
        try:
            json.loads(request.get_data(cache=True) or b"")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return json.dumps({"error": "body is not valid JSON"}), 400, {"Content-Type": "application/json"}
    return SlackRequestHandler(app).handle(request)
