"""Budgets that hold: per asker and overall, in questions and dollars, enforced before anything is queued, charged
once per request id; the counters in the Firestore emulator (and the in-memory adapter, by the same rules); 429
with Retry-After from the API, a polite reply in Slack, never to a retried delivery."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from askflow.adapters.firestore_budgets import FirestoreBudgets
from askflow.adapters.firestore_requests import FirestoreRequestStore
from askflow.adapters.memory import InMemoryBudgets
from askflow.config import Settings
from askflow.domain.budgets import TOTAL, BudgetLimits, Spent, counter_id
from askflow.domain.clock import utcnow
from askflow.domain.errors import Duplicate, OverBudget
from askflow.domain.model import Answer, Request, SlackThread, Source
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion
from tests.fakes import FakeEventBus, InMemoryRequestStore
from tests.support.loopback_apis import SlackAPI
from tests.test_ask_path import _settings, call, indexed  # noqa: F401 - the indexed docs fixture
from tests.test_slack_bot import SECRET, event, post, wait_for

NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def test_a_limit_names_itself_and_when_its_window_ends():
    limits = BudgetLimits(questions_per_asker=3, usd_total=5.0)
    limits.check({"asker:a": Spent(questions=2), TOTAL: Spent(questions=40, usd=4.99)}, at=NOON)  # under both
    with pytest.raises(OverBudget) as asker:
        limits.check({"asker:a": Spent(questions=3), TOTAL: Spent()}, at=NOON)
    assert asker.value.limit == "questions_per_asker" and asker.value.retry_after_s == 12 * 3600
    assert "this asker's limit of 3 questions per day" in str(asker.value) and "12 hours" in str(asker.value)
    with pytest.raises(OverBudget) as total:
        limits.check({"asker:a": Spent(), TOTAL: Spent(usd=5.0)}, at=NOON)
    assert total.value.limit == "usd_total" and "everyone's limit of $5" in str(total.value)


def test_the_counters_reset_with_the_window_and_keep_identities_apart(local_stack):
    budgets = FirestoreBudgets(client=firestore.Client(project="askflow-test"), collection="budgets_window",
                               limits=BudgetLimits(window_s=3600, questions_per_asker=2, usd_per_asker=1.0))
    for _ in range(2):
        budgets.admit(["asker:a"], at=NOON)
    with pytest.raises(OverBudget):
        budgets.admit(["asker:a"], at=NOON + dt.timedelta(minutes=59))
    budgets.admit(["asker:b"], at=NOON)  # another asker is unaffected
    budgets.admit(["asker:a"], at=NOON + dt.timedelta(hours=1))  # the next window starts at zero
    budgets.spend(["asker:b"], 1.25, at=NOON)
    with pytest.raises(OverBudget) as spent:
        budgets.admit(["asker:b"], at=NOON)
    assert spent.value.limit == "usd_per_asker"
    with pytest.raises(OverBudget):  # any identity over its limit refuses the question
        budgets.admit(["asker:c", "asker:b"], at=NOON)


@pytest.fixture(scope="module")
def budget_api(local_stack, indexed, pg_url):  # noqa: F811
    slack = SlackAPI()
    settings = _settings(pg_url, "budget", budget_questions_per_asker=10, budgets_collection="budgets_api",
                         slack_bot_token="xoxb-test", slack_signing_secret=SECRET, slack_api_url=slack.base_url)
    api, _ = local_stack.start_functions(settings)
    bot = local_stack.start_slack(settings)
    yield api.url, bot.url, slack
    slack.stop()


def _ask(api_url: str, token: str, address: str):
    return call("POST", f"{api_url}requests", json.dumps({"question": "How do tasks pull an XCom value?"}).encode(),
                headers={"X-Asker-Token": token, "X-Forwarded-For": address})


def test_fifty_concurrent_asks_from_one_asker_queue_exactly_ten(budget_api):
    api_url, _, _ = budget_api
    token = secrets.token_urlsafe(24)
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda _: _ask(api_url, token, "203.0.113.7"), range(50)))
    accepted = [body for status, body in answers if status == 202]
    refused = [body for status, body in answers if status == 429]
    assert len(accepted) == 10 and len(refused) == 40, [status for status, _ in answers]
    assert all(body["limit"] == "questions_per_asker" and body["retry_after_s"] > 0 for body in refused)
    stored = firestore.Client(project="askflow-test").collection("requests")
    assert all(stored.document(body["request_id"]).get().exists for body in accepted)  # exactly these ten queued

    other_status, _ = _ask(api_url, secrets.token_urlsafe(24), "198.51.100.9")
    assert other_status == 202  # another asker, from another address, is unaffected
    fresh_token_status, body = _ask(api_url, secrets.token_urlsafe(24), "203.0.113.7")
    assert fresh_token_status == 429  # a new token from the same address is the same asker's budget


def test_slack_answers_politely_in_the_thread_when_the_budget_is_spent(budget_api):
    _, bot_url, slack = budget_api
    bodies = [event(f"Ev-budget-{n}", f"How do tasks pull an XCom value? ({n})") for n in range(11)]
    for body in bodies:
        assert post(bot_url, body)[0] == 200
    last_ts = json.loads(bodies[-1])["event"]["ts"]
    notice = wait_for(lambda: [m for m in slack.posted if "can't take more questions" in m.get("text", "")
                               and "limit of 10 questions per day" in m["text"]])
    assert [n["thread_ts"] for n in notice] == [last_ts]
    stored = firestore.Client(project="askflow-test").collection("requests")
    assert not stored.document("slack-Ev-budget-10").get().exists  # nothing queued for it


@pytest.fixture(params=["firestore", "memory"])
def make_budgets(request):
    """Budgets of either adapter under ``limits``: a fresh Firestore collection each, or in memory."""
    def make(limits: BudgetLimits):
        if request.param == "memory":
            return InMemoryBudgets(limits)
        request.getfixturevalue("local_stack")
        return FirestoreBudgets(client=firestore.Client(project="askflow-test"),
                                collection=f"budgets_{secrets.token_hex(6)}", limits=limits)

    return make


def test_a_key_is_charged_once_however_often_and_however_racing_it_is_admitted(make_budgets):
    budgets = make_budgets(BudgetLimits(questions_per_asker=2, questions_total=3))
    barrier = threading.Barrier(8)

    def admit(_):
        barrier.wait()
        budgets.admit(["slack:U1"], at=NOON, key="slack-Ev-1")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(admit, range(8)))  # eight deliveries of one event at once: none refused
    budgets.admit(["slack:U1"], at=NOON, key="slack-Ev-1")  # a later one, the asker's slot held: not refused
    budgets.admit(["slack:U1"], at=NOON, key="slack-Ev-2")  # the asker's second question
    with pytest.raises(OverBudget) as asker:
        budgets.admit(["slack:U1"], at=NOON, key="slack-Ev-3")
    assert asker.value.limit == "questions_per_asker"
    budgets.admit(["slack:U2"], at=NOON, key="slack-Ev-4")  # everyone's third question
    with pytest.raises(OverBudget) as total:
        budgets.admit(["slack:U2"], at=NOON, key="slack-Ev-5")
    assert total.value.limit == "questions_total"


def _deliver(requests, events, budgets, request_id: str, user: str = "U1"):
    """A Slack event's delivery, as the Slack app submits it."""
    thread = SlackThread(channel="C1", ts="1700000000.000100", thread_ts="1700000000.000100", user=user)
    return handlers.submit_question(AskQuestion(question="How do tasks pull an XCom value?"), requests=requests,
                                    events=events, settings=Settings(), request_id=request_id,
                                    slack=thread, budgets=budgets)[0]


def test_two_concurrent_deliveries_of_one_event_make_one_request_charged_once(make_budgets):
    budgets = make_budgets(BudgetLimits(questions_per_asker=2))
    requests, events = InMemoryRequestStore(), FakeEventBus()
    barrier = threading.Barrier(2)

    def deliver(_):
        barrier.wait()
        try:
            return _deliver(requests, events, budgets, "slack-Ev-twice")
        except Duplicate:
            return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        delivered = [request for request in pool.map(deliver, range(2)) if request is not None]
    assert [r.request_id for r in delivered] == ["slack-Ev-twice"] and len(events.published) == 1
    _deliver(requests, events, budgets, "slack-Ev-next")  # the asker's second question: the limit is 2
    with pytest.raises(OverBudget):
        _deliver(requests, events, budgets, "slack-Ev-third")


class StopsOnFirstCreate(InMemoryRequestStore):
    """A request store whose first write never happens: the function stopped between the charge and the store."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    def create(self, request: Request) -> None:
        if not self.stopped:
            self.stopped = True
            raise ConnectionError("the instance stopped")
        super().create(request)


def test_a_redelivery_after_a_charge_that_stored_nothing_stores_it_without_a_second_charge(make_budgets):
    budgets = make_budgets(BudgetLimits(questions_per_asker=1))
    requests, events = StopsOnFirstCreate(), FakeEventBus()
    with pytest.raises(ConnectionError):
        _deliver(requests, events, budgets, "slack-Ev-stopped")
    stored = _deliver(requests, events, budgets, "slack-Ev-stopped")  # Slack's retry: charged already
    assert requests.get("slack-Ev-stopped") == stored and len(events.published) == 1
    with pytest.raises(Duplicate):  # a third delivery: the request exists, so no budget is even checked
        _deliver(requests, events, budgets, "slack-Ev-stopped")
    with pytest.raises(OverBudget):  # the one charge is the asker's one question
        _deliver(requests, events, budgets, "slack-Ev-other")


def _slots(collection: str, identity: str) -> int:
    """How many question slots ``identity`` holds in this window's counter of ``collection``."""
    counter = counter_id(identity, BudgetLimits().window(utcnow())[0])
    query = firestore.Client(project="askflow-test").collection(collection).where(
        filter=FieldFilter("counter", "==", counter))
    return int(query.count().get()[0][0].value)


@pytest.fixture(scope="module")
def strict_bot(local_stack, budget_api, pg_url) -> str:
    """A Slack bot with a limit of two questions per asker, answered by ``budget_api``'s worker."""
    _, _, slack = budget_api
    settings = _settings(pg_url, "budget", budget_questions_per_asker=2, budgets_collection="budgets_strict",
                         slack_bot_token="xoxb-test", slack_signing_secret=SECRET, slack_api_url=slack.base_url)
    return local_stack.start_slack(settings).url


def test_slack_retries_of_an_event_are_charged_once_and_never_refused(budget_api, strict_bot):
    _, _, slack = budget_api
    body = event("Ev-retried", "How do tasks pull an XCom value?", user="U8", ts="1700000600.000200")
    assert post(strict_bot, body)[0] == 200
    for retry in ("1", "2"):
        headers = {"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"}
        assert post(strict_bot, body, headers=headers)[0] == 200
    assert _slots("budgets_strict", "slack:U8") == 1
    following = event("Ev-retried-next", "Where do connections come from?", user="U8", ts="1700000601.000200")
    assert post(strict_bot, following)[0] == 200  # the asker's next question: their second of two
    stored = firestore.Client(project="askflow-test").collection("requests")
    assert stored.document("slack-Ev-retried").get().exists and stored.document("slack-Ev-retried-next").get().exists
    assert _slots("budgets_strict", "slack:U8") == 2
    for ts in ("1700000600.000200", "1700000601.000200"):
        wait_for(lambda ts=ts: [m for m in slack.replies(ts) if m.get("blocks")])
        time.sleep(1)
        replies = slack.replies(ts)
        assert len(replies) == 1 and "can't take more questions" not in replies[0].get("text", "")  # the answer


def _served(n: int) -> Request:
    thread = SlackThread(channel="C9", ts=f"17000007{n}0.000300", thread_ts=f"17000007{n}0.000300", user="U1")
    return Request(request_id=f"slack-Ev-served-{n}", question="How do pools limit concurrency?",
                   created_at=utcnow(), thread_id=f"slack-C9-served-{n}", slack=thread).completed(Answer(
                       text="Pools cap running tasks [1].", sources=[Source(n=1, title="Pools", url="u")],
                       mode="cached", queries=[], usage=[], timings_ms={}, cached_from="earlier-1",
                       cache_similarity=0.93), at=utcnow())


def test_a_fresh_answer_is_charged_to_whoever_clicked_and_refused_past_the_limit(budget_api, strict_bot):
    _, _, slack = budget_api
    requests = FirestoreRequestStore(client=firestore.Client(project="askflow-test"), collection="requests")
    served = [_served(n) for n in range(3)]
    for request in served:
        requests.create(request)
    for n in (0, 0, 1, 2):  # U9 clicks "Get a fresh answer" on three answers (twice on the first)
        payload = {"type": "block_actions", "user": {"id": "U9", "username": "bo"}, "team": {"id": "T1"},
                   "api_app_id": "A1", "token": "t", "trigger_id": "1.5", "container": {"type": "message"},
                   "channel": {"id": "C9"}, "response_url": f"{slack.url}/response",
                   "actions": [{"type": "button", "action_id": "askflow_fresh", "block_id": "b",
                                "value": served[n].request_id, "action_ts": str(time.time())}]}
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        assert post(strict_bot, body, content_type="application/x-www-form-urlencoded")[0] == 200
    asked = [requests.get(f"{request.request_id}-fresh") for request in served]
    assert [r.budget_identities if r else None for r in asked] == [["slack:U9"], ["slack:U9"], None]
    assert _slots("budgets_strict", "slack:U9") == 2 and _slots("budgets_strict", "slack:U1") == 0
    notice, = [m for m in slack.posted if m.get("thread_ts") == served[2].slack.thread_ts]
    assert "can't take more questions" in notice["text"] and "limit of 2 questions per day" in notice["text"]
