"""Budgets that hold: per asker and overall, in questions and dollars, enforced before anything is queued; the
counters in the Firestore emulator, in transactions; 429 with Retry-After from the API, a polite reply in Slack."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import firestore

from askflow.adapters.firestore_budgets import FirestoreBudgets
from askflow.domain.budgets import TOTAL, BudgetLimits, Spent
from askflow.domain.errors import OverBudget
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
    notice = wait_for(lambda: [m for m in slack.posted if "can't take more questions" in m.get("text", "")])
    assert notice[0]["thread_ts"] == last_ts and "limit of 10 questions per day" in notice[0]["text"]
    stored = firestore.Client(project="askflow-test").collection("requests")
    assert not stored.document("slack-Ev-budget-10").get().exists  # nothing queued for it
