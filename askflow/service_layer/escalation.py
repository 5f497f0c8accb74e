"""When askflow is not sure, a person answers: the question goes to the team's channel, a reviewer marks a reply in
its thread as the answer, and that answer reaches the asker and (verified by construction: ``learning.trust``) every
later asker of a question like it.

- ``escalate``: one escalation per request, however often it is retried. The request's ``escalation`` field is set
  in one atomic write that refuses a second; the post before it is found again after a death between the two
  (``Escalations.posted``). Only a question everyone in the channel may read goes there (its ``readers`` and the
  place it was asked); a repeat of an open escalated question whose askers may read the same answer joins it; the
  ``Budgets`` counters limit escalations per asker and overall.
- ``answered``: a reviewer's reaction on a reply in an escalation's thread sets the team's answer (its own field,
  never the worker's claim-fenced outcome; the original answer stays), on the request and on those that joined it,
  and delivers it to each asker's Slack thread once.
"""

from __future__ import annotations

import datetime as dt
import logging

from askflow.config import Settings
from askflow.domain.audiences import Viewer
from askflow.domain.clock import utcnow
from askflow.domain.errors import Conflict, Forbidden, NotFound, OverBudget
from askflow.domain.model import Escalation, Request, TeamAnswer
from askflow.learning.questions import question_key
from askflow.ports import Budgets, Escalations, RequestStore

log = logging.getLogger(__name__)
ASKED_BY_ASKER = "its asker asked for a person"
POSTED_WITHIN = dt.timedelta(days=2)  # how far back a retried escalation looks for its own post


def escalate(request: Request, *, why: str, requests: RequestStore, escalations: Escalations | None,
             budgets: Budgets | None, settings: Settings) -> Escalation:
    """Hand ``request`` to the team, once; returns its escalation as stored (an earlier one when there is one)."""
    if request.escalation is not None:
        return request.escalation
    now = utcnow()
    key = question_key(request.stored_question)
    base = Escalation(state="skipped", why=why, asked_at=now, question_key=key)
    escalation = _skipped_or_joined(request, base, requests=requests, escalations=escalations, budgets=budgets,
                                    settings=settings)
    if escalation is None:  # to the channel: find a post of an earlier attempt, or post
        channel = settings.escalation_channel
        ts = escalations.posted(request, since=now - POSTED_WITHIN) or escalations.post(request, why=why)
        escalation = base.model_copy(update={"state": "open", "channel": channel, "ts": ts,
                                             "thread": f"{channel}/{ts}"})
    if not requests.escalate(request.request_id, escalation):
        stored = requests.get(request.request_id)
        return stored.escalation if stored is not None and stored.escalation is not None else escalation
    log.info("request %s escalated: %s (%s)", request.request_id, escalation.state,
             escalation.why_not or escalation.thread or escalation.joined)
    return escalation


def _skipped_or_joined(request: Request, base: Escalation, *, requests: RequestStore,
                       escalations: Escalations | None, budgets: Budgets | None,
                       settings: Settings) -> Escalation | None:
    """The escalation that does not reach the channel (skipped, or joined to an open one), or ``None``."""
    if escalations is None or not settings.escalation_channel:
        return base.model_copy(update={"why_not": "no escalation channel is configured"})
    members = Viewer.of(escalations.readers())
    if not (members.may_read(request.readers) and members.may_read(request.place_readers)):
        return base.model_copy(update={"why_not": "the escalation channel's members may not read it"})
    for open_one in requests.open_escalations(base.question_key):
        if open_one.request_id != request.request_id and open_one.readers == request.readers and \
                open_one.place_readers == request.place_readers:
            return base.model_copy(update={"state": "joined", "joined": open_one.request_id})
    if budgets is not None:
        try:
            budgets.admit(request.budget_identities or [request.asker_key], at=base.asked_at,
                          key=f"escalation-{request.request_id}", kind="escalations")
        except OverBudget as error:
            return base.model_copy(update={"why_not": f"over budget: {error}"})
    return None


def ask_for_person(request_id: str, *, asker_token: str | None, requests: RequestStore,
                   escalations: Escalations | None, budgets: Budgets | None, settings: Settings) -> Escalation:
    """The asker's "ask a person" (the web page's button: their token; ``None``: a Slack click, checked there)."""
    request = requests.get(request_id)
    if request is None:
        raise NotFound(f"no request {request_id}")
    if asker_token is not None and not request.asked_by(asker_token):
        raise Forbidden("only whoever asked may hand their question to a person (send X-Asker-Token)")
    if not request.terminal:
        raise Conflict(f"request {request_id} is {request.status.value}: ask for a person once it is answered")
    return escalate(request, why=ASKED_BY_ASKER, requests=requests, escalations=escalations, budgets=budgets,
                    settings=settings)


def answered(channel: str, reply_ts: str, *, marked_by: str, requests: RequestStore, escalations: Escalations,
             settings: Settings) -> Request | None:
    """A reviewer (the caller checked) marked the reply ``reply_ts`` in ``channel`` as the answer: it becomes the team's
    answer of the escalation whose thread holds it, and of those that joined it, each delivered once. Returns the
    escalated request (``None``: the reply is in no escalation's thread)."""
    if channel != settings.escalation_channel:
        return None
    found = escalations.reply(channel, reply_ts)
    if found is None:
        return None
    text, author, thread_ts = found
    request = requests.escalated_in(f"{channel}/{thread_ts}")
    if request is None or thread_ts == reply_ts or not text.strip():
        return None
    answer = TeamAnswer(text=text.strip()[:20_000], by=f"slack:{author}", marked_by=marked_by, at=utcnow(),
                        ts=reply_ts)
    stored = requests.answer_escalation(request.request_id, answer)
    if stored is None or stored.team_answer is None:
        return stored
    for joined in [stored, *requests.joined_to(stored.request_id)]:
        now = requests.answer_escalation(joined.request_id, stored.team_answer) or joined
        if now.slack is not None and now.escalation is not None and now.escalation.delivered_at is None:
            escalations.deliver(now, stored.team_answer)
            requests.escalation_delivered(now.request_id, at=utcnow())
    log.info("request %s: the team's answer (reply %s, marked by %s)", stored.request_id, reply_ts, marked_by)
    return requests.get(stored.request_id)


def public_escalation(request: Request) -> dict | None:
    """What a request's public view shows of its escalation: its state, and the team's answer with when it came
    (its author as "a team member": never a Slack user or channel)."""
    escalation = request.escalation
    if escalation is None:
        return None
    view: dict = {"state": escalation.state, "asked_at": escalation.asked_at.isoformat()}
    if escalation.answer is not None:
        view["answer"] = {"text": escalation.answer.text, "by": "a team member",
                          "at": escalation.answer.at.isoformat()}
    return view
