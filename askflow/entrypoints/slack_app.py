"""The Slack app (slack_bolt): Events API and interactivity on one HTTPS endpoint.

Bolt verifies the signature and timestamp (401 when bad or stale) and answers ``url_verification``. A mention or a
direct message becomes a request queued for the answer worker, never answered inside the webhook call. The request
id derives from Slack's event id, so Slack's retries (``X-Slack-Retry-Num``) and duplicates map to the one request,
charged once against the asker's budgets and never refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from askflow.adapters.slack_replies import APPROVE, ASK_PERSON, FRESH, RATE_DOWN, RATE_UP, WORKING, question_text
from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.errors import ConfigurationError, Conflict, Duplicate, NotFound, OverBudget, TooLarge, TooSlow
from askflow.domain.model import SlackThread
from askflow.entrypoints.http_bodies import read_body, unread_body_response
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion, RateAnswer, is_storable_id

log = logging.getLogger(__name__)
MAX_SLACK_BODY_BYTES = 256 * 1024  # Slack's events and clicks are a few kB


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

    def place(channel: str, user: str | None) -> dict:
        """What an answer posted in ``channel`` may draw on (what everyone there may read) and who sees it there
        (``SlackAudiences``); ``public`` sources and admins-only readers when Slack cannot say."""
        from slack_sdk.errors import SlackApiError

        audiences = components.slack_audiences
        try:
            return {"viewer": Viewer.of(audiences.place_audiences(channel, user)),
                    "place_readers": audiences.place_readers(channel)}
        except (SlackApiError, KeyError) as error:
            log.warning("Slack membership of %s unknown (%s): answering from public sources only", channel, error)
            return {"viewer": PUBLIC_VIEWER, "place_readers": []}

    def queue(event: dict, body: dict) -> None:
        """A mention or a direct message becomes a queued request; one that is not a well-formed message (a
        signed request can still be malformed) is acknowledged and dropped, with a log line."""
        try:
            message = SlackMessage.model_validate({**event, "event_id": body.get("event_id")})
            command = AskQuestion(question=question_text(message.text)[: settings.max_question_chars] or " ",
                                  thread_id=slack_thread_id(message.channel, message.thread))
        except ValidationError as error:
            log.warning("Slack event dropped, not a message askflow can answer: %s",
                        "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()))
            return
        if not command.question.strip():
            return
        try:
            handlers.submit_question(
                command, requests=components.requests, events=components.events, settings=settings,
                request_id=f"slack-{message.event_id}",
                slack=SlackThread(channel=message.channel, ts=message.ts, thread_ts=message.thread,
                                  user=message.user, in_thread=message.thread_ts is not None),
                budgets=components.budgets, **place(message.channel, message.user),
            )
        except Duplicate:
            log.info("Slack event %s already queued (a retry)", message.event_id)
            return
        except OverBudget as error:
            log.info("Slack question from %s refused: %s", message.user, error.limit)
            replies.notice(message.channel, message.thread, f"Sorry, I can't take more questions now: {error}.")
            return
        replies.mark(message.channel, message.ts, add=WORKING)

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
            user = _clicker(body)
            if not is_storable_id(action.get("value")) or not user:
                log.info("Slack rating ignored: no request id or no user in the click")
                return
            try:
                handlers.rate_answer(action["value"], RateAnswer(positive=positive), requests=components.requests,
                                     rater=f"slack-{user}")
            except (NotFound, Conflict) as error:  # a click for an unknown or unanswered request: acknowledged
                log.info("Slack rating ignored: %s", error)

        return handler

    @app.action(FRESH)
    def fresh(ack, body, action):
        """The question of an answer served from the cache, asked again in its thread and answered anew, counted
        against the budgets of whoever clicked; a second click maps to the same request."""
        ack()
        served = components.requests.get(action["value"]) if is_storable_id(action.get("value")) else None
        if served is None or served.slack is None:
            return
        thread = served.slack.model_copy(update={"user": _clicker(body) or None})
        try:
            handlers.submit_question(
                AskQuestion(question=served.question, thread_id=served.thread_id, fresh=True),
                requests=components.requests, events=components.events, settings=settings,
                request_id=f"{served.request_id}-fresh", slack=thread, budgets=components.budgets,
                **place(thread.channel, thread.user))
        except Duplicate:
            log.info("fresh answer to %s already queued", served.request_id)
        except OverBudget as error:
            log.info("Slack fresh answer for %s refused: %s", thread.user, error.limit)
            replies.notice(thread.channel, thread.thread_ts, f"Sorry, I can't take more questions now: {error}.")

    def reviewer(user: str) -> bool:
        """Whether the Slack user ``user`` is one of ``ASKFLOW_SLACK_REVIEWERS`` (a user id, or a member of a user
        group named there, read from Slack at each click)."""
        from slack_sdk.errors import SlackApiError

        if not user:
            return False
        for entry in settings.slack_reviewers:
            if entry == user:
                return True
            if entry.startswith("S"):
                try:
                    members = components.slack_client.usergroups_users_list(usergroup=entry).get("users") or []
                except SlackApiError as error:
                    log.warning("reviewers group %s unreadable: %s", entry, error.response.get("error"))
                    continue
                if user in members:
                    return True
        return False

    @app.action(APPROVE)
    def approve(ack, body, action):
        """A reviewer's approval: verified (``learning.trust``), kept in the audit log. Anyone else's click does
        nothing (logged)."""
        ack()
        user = _clicker(body)
        if not is_storable_id(action.get("value")) or not reviewer(user):
            log.info("Slack approval ignored: %s is not a reviewer", user or "nobody")
            return
        try:
            handlers.review_answer(action["value"], approved=True, reviewer=f"slack:{user}", via="slack",
                                   requests=components.requests)
        except (NotFound, Conflict) as error:
            log.info("Slack approval ignored: %s", error)

    @app.action(ASK_PERSON)
    def ask_person(ack, body, action):
        """The asking user hands their question to the team (anyone else's click: nothing)."""
        from askflow.service_layer.escalation import ask_for_person

        ack()
        user = _clicker(body)
        request = components.requests.get(action["value"]) if is_storable_id(action.get("value")) else None
        if request is None or request.slack is None or not user or request.slack.user != user:
            log.info("Slack 'ask a person' ignored: %s did not ask it", user or "nobody")
            return
        try:
            escalated = ask_for_person(request.request_id, asker_token=None, requests=components.requests,
                                       escalations=components.escalations, budgets=components.budgets,
                                       settings=settings)
        except (NotFound, Conflict) as error:
            log.info("Slack 'ask a person' ignored: %s", error)
            return
        note = ("I've asked the team; their answer will come here." if escalated.state in ("open", "joined")
                else f"I could not ask the team: {escalated.why_not}.")
        replies.notice(request.slack.channel, request.slack.thread_ts, note)

    def stored_answers():
        """The vector store holding the stored answers (relabelled when a team's answer is marked internal), or
        ``None`` when it cannot be reached from here (the grading the mark brings relabels it)."""
        try:
            return components.store
        except Exception as error:  # noqa: BLE001 - the mark stands without it
            log.warning("stored answers unreachable from the Slack app: %s", error)
            return None

    @app.event("reaction_added")
    def on_reaction(event):
        """A reviewer's reaction (``ASKFLOW_ESCALATION_REACTION``) on a reply in an escalation's thread marks it as
        the team's answer, and their ``ASKFLOW_ESCALATION_INTERNAL_REACTION`` on it (before or after) marks that
        answer internal; anyone else's, or another reaction, does nothing. Every reaction in the workspace comes
        here: the cheap facts are checked first (the reaction, the escalation channel, then a reply in a known
        escalation's thread), and whether its user is a reviewer (a user group's members, read from Slack) last."""
        from askflow.service_layer.escalation import answered, marked_internal

        item = event.get("item") or {}
        user = re.sub(r"[^A-Za-z0-9_-]", "_", str(event.get("user", "")))[:64]
        reaction = event.get("reaction")
        if reaction not in (settings.escalation_reaction, settings.escalation_internal_reaction) or \
                item.get("type") != "message" or components.escalations is None or not user:
            return
        channel, ts = str(item.get("channel", "")), str(item.get("ts", ""))
        if channel != settings.escalation_channel or not re.fullmatch(r"\d{1,12}\.\d{1,8}", ts):
            return
        if reaction == settings.escalation_internal_reaction:
            marked_internal(channel, ts, requests=components.requests, escalations=components.escalations,
                            settings=settings, store=stored_answers(), marked_by=f"slack:{user}", reviewer=reviewer)
            return
        answered(channel, ts, marked_by=f"slack:{user}", requests=components.requests,
                 escalations=components.escalations, settings=settings, reviewer=reviewer, store=stored_answers())

    app.action(RATE_UP)(rate(True))
    app.action(RATE_DOWN)(rate(False))
    return app


def _clicker(body: dict) -> str:
    """The Slack user id of whoever clicked a button, made safe to store; empty when the click names none."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str((body.get("user") or {}).get("id", "")))[:64]


def slack_thread_id(channel: str, thread_ts: str) -> str:
    """A Slack thread's id as requests keep it: the same for every message of the thread, naming no channel."""
    return "slack-" + hashlib.sha256(f"{channel}/{thread_ts}".encode()).hexdigest()[:32]


class SlackMessage(BaseModel):
    """The fields of a Slack message event that askflow reads, checked: Slack ids, timestamps and text."""

    model_config = ConfigDict(extra="ignore")

    event_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")
    channel: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    ts: str = Field(pattern=r"^\d{1,12}\.\d{1,8}$")
    thread_ts: str | None = Field(default=None, pattern=r"^\d{1,12}\.\d{1,8}$")
    text: StrictStr = ""
    user: str | None = Field(default=None, max_length=64)

    @property
    def thread(self) -> str:
        return self.thread_ts or self.ts


def handle(request, app):
    """Bolt's handler, after refusing what Bolt would crash on: a body past ``MAX_SLACK_BODY_BYTES`` (413), a
    timestamp that is not a number (401, as any bad signature), a signed but broken JSON body (400)."""
    from slack_bolt.adapter.google_cloud_functions import SlackRequestHandler

    headers = {"Content-Type": "application/json"}
    if request.method == "POST":
        try:
            body = read_body(request, MAX_SLACK_BODY_BYTES)
        except TooLarge as error:
            return unread_body_response({"error": str(error)}, headers, status=413)
        except TooSlow as error:
            return unread_body_response({"error": str(error)}, headers, status=408)
        if not request.headers.get("X-Slack-Request-Timestamp", "").strip().isdigit():
            return json.dumps({"error": "missing or bad X-Slack-Request-Timestamp"}), 401, headers
        if request.mimetype == "application/json":
            try:
                json.loads(body or b"")
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                return json.dumps({"error": "body is not valid JSON"}), 400, headers
    return SlackRequestHandler(app).handle(request)
