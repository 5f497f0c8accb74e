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
- ``marked_internal``: a reviewer's second reaction narrows the team's answer to the internal audience: its asker
  still reads it, the cache serves it to no one outside that audience, the feed never lists it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from askflow.config import Settings
from askflow.domain.audiences import Viewer
from askflow.domain.clock import utcnow
from askflow.domain.errors import Conflict, Forbidden, LeaseHeld, NotFound, OverBudget
from askflow.domain.model import Escalation, Request, RequestStatus, TeamAnswer
from askflow.learning.questions import question_key
from askflow.ports import Budgets, Escalations, RequestStore, ThreadReply, VectorStore
from askflow.service_layer.evaluation import answer_doc_id

log = logging.getLogger(__name__)
ASKED_BY_ASKER = "its asker asked for a person"
POSTED_WITHIN = dt.timedelta(days=2)  # how far back a retried escalation looks for its own post


def escalate(request: Request, *, why: str, requests: RequestStore, escalations: Escalations | None,
             budgets: Budgets | None, settings: Settings, retry_skipped: bool = False) -> Escalation:
    """Hand ``request`` to the team, once; returns its escalation as stored (an earlier one when there is one).

    A post is taken first (state ``posting``, in the atomic write that refuses a second escalation), then made (or
    found again, when a worker that took it died after posting), then settled as ``open``: two racing escalations of
    one request post once. A joined one that finds its escalation answered meanwhile takes the answer at once.
    ``retry_skipped`` (an explicit request for a person): an escalation skipped for a reason that may have passed
    (``Escalation.retriable``: no channel then, a budget) is tried again; a skip by the audience rule stays."""
    now = utcnow()
    if request.escalation is not None and request.escalation.state == "posting" and \
            not request.escalation.posting_stale(now):
        raise LeaseHeld(f"request {request.request_id}: another worker is posting its escalation")
    retrying = request.escalation if retry_skipped and request.escalation is not None and \
        request.escalation.retriable else None
    if request.escalation is not None and not request.escalation.posting_stale(now) and retrying is None:
        return request.escalation
    key = question_key(request.stored_question)
    base = Escalation(state="skipped", why=why, asked_at=now, question_key=key)
    # a stale post: its worker died; this one finishes it
    taking_over = request.escalation is not None and retrying is None
    escalation = None if taking_over else _skipped_or_joined(
        request, base, requests=requests, escalations=escalations, budgets=budgets, settings=settings)
    if escalation is not None:
        if not requests.escalate(request.request_id, escalation, replacing=retrying):
            return _stored_escalation(request, requests) or escalation
        log.info("request %s escalated: %s (%s)", request.request_id, escalation.state,
                 escalation.why_not or escalation.joined)
        if escalation.joined:
            _take_an_answer_given_meanwhile(request.request_id, escalation.joined, requests=requests,
                                            escalations=escalations)
        return escalation
    posting = (request.escalation if taking_over else base).model_copy(update={"state": "posting",
                                                                               "posting_at": now})
    if taking_over:
        if not requests.settle_escalation(request.request_id, posting):  # retake the stale post, or another did
            return _stored_escalation(request, requests) or posting
    elif not requests.escalate(request.request_id, posting, replacing=retrying):
        return _stored_escalation(request, requests) or posting
    channel = escalations.place or settings.escalation_channel
    ts = escalations.posted(request, since=now - POSTED_WITHIN) or escalations.post(request, why=why)
    opened = posting.model_copy(update={"state": "open", "channel": channel, "ts": ts, "thread": f"{channel}/{ts}",
                                        "posting_at": None})
    requests.settle_escalation(request.request_id, opened)
    log.info("request %s escalated to %s", request.request_id, opened.thread)
    return opened


def _stored_escalation(request: Request, requests: RequestStore) -> Escalation | None:
    stored = requests.get(request.request_id)
    return stored.escalation if stored is not None else None


def _take_an_answer_given_meanwhile(request_id: str, joined: str, *, requests: RequestStore,
                                    escalations: Escalations | None) -> None:
    """A repeat that joined an escalation answered between its read and its write would wait for ever: it takes the
    answer now, and gets it delivered."""
    target = requests.get(joined)
    if target is None or target.team_answer is None:
        return
    requests.answer_escalation(request_id, target.team_answer)
    if escalations is not None:
        _deliver_team_answer(request_id, requests=requests, escalations=escalations)


def _skipped_or_joined(request: Request, base: Escalation, *, requests: RequestStore,
                       escalations: Escalations | None, budgets: Budgets | None,
                       settings: Settings) -> Escalation | None:
    """The escalation that does not reach the channel (skipped, or joined to an open one), or ``None``."""
    if escalations is None or not (escalations.place or settings.escalation_channel):
        return base.model_copy(update={"why_not": "no escalation channel is configured"})
    members = Viewer.of(escalations.readers())
    if not (members.may_read(request.readers) and members.may_read(request.place_readers)):
        return base.model_copy(update={"why_not": Escalation.MAY_NOT_READ})
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
    """The asker's "ask a person" (the web page's button: their token; ``None``: a Slack click, checked there): an
    escalation skipped before for a reason that may have passed (no channel then, a budget) is tried again."""
    request = requests.get(request_id)
    if request is None:
        raise NotFound(f"no request {request_id}")
    if asker_token is not None and not request.asked_by(asker_token):
        raise Forbidden("only whoever asked may hand their question to a person (send X-Asker-Token)")
    if request.status is not RequestStatus.COMPLETE:
        raise Conflict(f"request {request_id} is {request.status.value}: ask for a person once it is answered")
    return escalate(request, why=ASKED_BY_ASKER, requests=requests, escalations=escalations, budgets=budgets,
                    settings=settings, retry_skipped=True)


def answered(channel: str, reply_ts: str, *, marked_by: str, requests: RequestStore, escalations: Escalations,
             settings: Settings, reviewer: Callable[[str], bool] | None = None,
             store: VectorStore | None = None) -> Request | None:
    """``marked_by`` marked the reply ``reply_ts`` in ``channel`` as the answer: when they are a reviewer, it becomes
    the team's answer of the escalation whose thread holds it, and of those that joined it — all written first — then
    each delivered once (a failed delivery is logged and left to the next mark or retry; it stops no other). A reply
    a reviewer marked internal before it was marked the answer is stored internal (``marked_internal``): the reply's
    reactions are read again after the write, so a lock whose own event came before the write (and found no team
    answer to narrow) still lands, whichever of the two handlers runs first.
    ``reviewer``: whether a Slack user id is a reviewer (it may ask Slack for a group's members), asked only once the
    cheap facts hold (the escalation channel, a reply in a known escalation's thread); ``None``: the caller checked
    ``marked_by``, and no reaction counts. Returns the escalated request (``None``: the reply is in no escalation's
    thread, or its marker is no reviewer)."""
    if channel != settings.escalation_channel:
        return None
    found = escalations.reply(channel, reply_ts)
    if found is None or found.thread_ts == reply_ts or not found.text.strip():
        return None
    request = requests.escalated_in(f"{channel}/{found.thread_ts}")
    if request is None:
        return None
    if reviewer is not None and not reviewer(marked_by.removeprefix("slack:")):
        log.info("escalation answer ignored: %s is not a reviewer", marked_by)
        return None

    def locked(reply: ThreadReply | None) -> bool:
        return reviewer is not None and reply is not None and any(
            reviewer(user) for user in reply.reactions.get(settings.escalation_internal_reaction, []))

    internal = locked(found)
    answer = TeamAnswer(text=found.text.strip()[:20_000], by=f"slack:{found.author}", marked_by=marked_by,
                        at=utcnow(), ts=reply_ts, internal=settings.escalation_internal_audience if internal else None)
    locked_meanwhile = (lambda: locked(escalations.reply(channel, reply_ts))) if reviewer is not None else False
    return _settle(request, answer, requests=requests, escalations=escalations, settings=settings, store=store,
                   internal=internal or locked_meanwhile)


def _settle(request: Request, answer: TeamAnswer, *, requests: RequestStore, escalations: Escalations,
            settings: Settings, store: VectorStore | None = None,
            internal: bool | Callable[[], bool] = False) -> Request | None:
    """``answer`` as the team's answer of ``request`` and of those that joined it — all written first — then each
    delivered once (a failed delivery is logged and left to the next mark or retry; it stops no other).
    ``internal``: whether a reviewer marked it internal, or how to ask that after the write (a reaction read again)."""
    stored = requests.answer_escalation(request.request_id, answer)
    if stored is None or stored.team_answer is None:
        return stored
    if callable(internal) and not stored.team_internal and stored.team_answer.ts == answer.ts:
        internal = internal()
    if internal is True and not stored.team_internal and stored.team_answer.ts == answer.ts:  # locked meanwhile
        stored = _narrow(stored, answer.ts, requests=requests, settings=settings, store=store) or stored
    joined = requests.joined_to(stored.request_id)
    for other in joined:
        requests.answer_escalation(other.request_id, stored.team_answer)
    for request_id in [stored.request_id, *(other.request_id for other in joined)]:
        _deliver_team_answer(request_id, requests=requests, escalations=escalations)
    log.info("request %s: the team's answer (%s, marked by %s)", stored.request_id, answer.ts, answer.marked_by)
    return requests.get(stored.request_id)


def take_marked_answers(*, requests: RequestStore, escalations: Escalations, settings: Settings) -> int:
    """The answers reviewers marked in the escalation place itself (``Escalations.marked``: a GitHub reviewer's
    command comment) become the team's answers of their requests, as a reviewer's ✅ does in Slack; each answered
    escalation is then closed in its place (its issue), so the next pass reads it no more — once every request it
    answers has its answer delivered (a Slack asker's thread) or has nothing to deliver: one whose delivery failed
    stays open, and the next pass delivers it (after the delivery's lease) and closes it. A mark counts only on the
    request's own issue (the one its escalation was posted as: ``Escalation.ts``). Idempotent: an answer taken
    before changes nothing, and one whose close failed is taken again and closed. Returns how many were taken."""
    taken = 0
    for request_id, ts, answer in escalations.marked():
        request = requests.get(request_id)
        if request is None or request.escalation is None or request.escalation.channel != escalations.place or \
                request.escalation.ts != ts:
            log.info("marked answer ignored: %s has no escalation %s in %s", request_id, ts, escalations.place)
            continue
        stored = _settle(request, answer, requests=requests, escalations=escalations, settings=settings)
        if stored is None or stored.team_answer is None:
            continue
        taken += 1
        waiting = [r.request_id for r in [stored, *requests.joined_to(stored.request_id)] if not _delivered(r)]
        if waiting:
            log.info("escalation of %s left open: the team's answer awaits delivery to %s", request_id, waiting)
        else:
            escalations.close(stored)
    return taken


def _delivered(request: Request) -> bool:
    """Whether the team's answer reached ``request``'s asker: set on it, and in their Slack thread if they asked in
    Slack (a web or MCP asker reads it on the request)."""
    return request.team_answer is not None and (
        request.slack is None or request.escalation.delivered_at is not None)


def marked_internal(channel: str, reply_ts: str, *, requests: RequestStore, escalations: Escalations,
                    settings: Settings, store: VectorStore | None = None, marked_by: str | None = None,
                    reviewer: Callable[[str], bool] | None = None) -> Request | None:
    """``marked_by`` marked the team's answer ``reply_ts`` internal (``reviewer``, asked last as ``answered`` asks it:
    whether they are a reviewer; ``None``: the caller checked): it is narrowed to
    ``ASKFLOW_ESCALATION_INTERNAL_AUDIENCE`` (``Request.team_readers``) on the request and on those that joined it,
    and taken out of the feed; a stored answer already written back is relabelled at once (``store``), and the
    grading its new revision brings relabels its learned record. Marking it again changes nothing. A reply not (yet)
    the answer is left alone: marking it the answer reads this reaction. Returns the escalated request."""
    if channel != settings.escalation_channel:
        return None
    found = escalations.reply(channel, reply_ts)
    if found is None:
        return None
    request = requests.escalated_in(f"{channel}/{found.thread_ts}")
    if request is None or request.team_answer is None or request.team_answer.ts != reply_ts:
        return None
    if reviewer is not None and not reviewer((marked_by or "").removeprefix("slack:")):
        log.info("internal mark ignored: %s is not a reviewer", marked_by or "nobody")
        return None
    return _narrow(request, reply_ts, requests=requests, settings=settings, store=store)


def _narrow(request: Request, reply_ts: str, *, requests: RequestStore, settings: Settings,
            store: VectorStore | None) -> Request | None:
    audience = settings.escalation_internal_audience
    stored = requests.mark_team_answer_internal(request.request_id, reply_ts, audience)
    for other in requests.joined_to(request.request_id):
        requests.mark_team_answer_internal(other.request_id, reply_ts, audience)
    if stored is not None and store is not None:
        try:  # its stored answer, if it was written back: relabelled now, not at the next grading
            store.relabel([answer_doc_id(stored.request_id, settings.answers_source)], stored.team_readers)
        except Exception as error:  # noqa: BLE001 - the grading the mark brings relabels it too
            log.warning("request %s: its stored answer could not be relabelled now: %s", stored.request_id, error)
    log.info("request %s: the team's answer is internal (%s)", request.request_id, audience)
    return stored


def _deliver_team_answer(request_id: str, *, requests: RequestStore, escalations: Escalations,
                         lease_s: float = 60.0) -> None:
    """The team's answer to the asker's Slack thread, by the one worker that claimed its delivery (a web or MCP asker
    reads it on the request)."""
    request = requests.get(request_id)
    if request is None or request.slack is None or request.team_answer is None:
        return
    if not requests.claim_escalation_delivery(request_id, lease_s=lease_s):
        return
    try:
        escalations.deliver(request, request.team_answer)
    except Exception as error:  # noqa: BLE001 - one asker's archived channel must not keep the others waiting
        log.warning("request %s: the team's answer could not be delivered: %s", request_id, error)
        return
    requests.escalation_delivered(request_id, at=utcnow())


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
