"""The web page in a real headless Chromium (Debian's, driven by Playwright) against the local stack, at phone width:
ask → "working" → answer with numbered source links → rate → the rating is in Firestore → follow-up in the thread."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.cloud import firestore

from tests.test_ask_path import _settings, indexed  # noqa: F401 - the indexed docs fixture

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def web_api(local_stack, indexed, pg_url) -> str:  # noqa: F811
    api, _ = local_stack.start_functions(_settings(pg_url, "web"))
    return api.url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    yield page
    context.close()


def test_ask_read_rate_and_follow_up_at_phone_width(page, web_api):
    from playwright.sync_api import expect

    page.goto(web_api)
    question = page.get_by_label("Your question")
    question.fill("How do tasks pull an XCom value?")
    question.press("Control+Enter")  # keyboard only
    page.wait_for_selector(".answer", timeout=90_000)

    answer = page.locator(".answer").first
    assert "Extractive mode" in answer.locator(".mode-note").inner_text()
    assert answer.locator(".answer-text blockquote").count() >= 1  # the quotes, as quotes
    first_source = answer.locator(".sources a").first
    page_url, _, fragment = first_source.get_attribute("href").partition("#")
    assert page_url.endswith("xcoms.rst") and fragment.startswith("pushing-and-pulling")  # the page and its section
    assert answer.locator(".answer-text a").first.inner_text() == "[1]"  # citations link to their sources
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling

    answer.get_by_label("Comment (optional)").fill("clear and short")
    answer.get_by_role("button", name="Helpful", exact=True).click()
    expect(answer.locator(".rating-status")).to_contain_text("Thanks")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "web-answer-phone.png"), full_page=True)

    request_id = answer.get_attribute("data-request-id")
    stored = firestore.Client(project="askflow-test").collection("requests").document(request_id).get().to_dict()
    (rater, rating), = stored["ratings"].items()
    assert rater == "asker" and rating["positive"] is True and rating["comment"] == "clear and short"

    follow_up = page.get_by_label("Follow-up question")
    follow_up.fill("And how does a task push one?")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator(".answer")).to_have_count(2, timeout=90_000)
    second_id = page.locator(".answer").nth(1).get_attribute("data-request-id")
    second = firestore.Client(project="askflow-test").collection("requests").document(second_id).get().to_dict()
    assert second["thread_id"] == request_id


def test_a_repeated_question_shows_the_verified_answer_and_a_fresh_one_on_request(page, web_api, pg_url):
    from playwright.sync_api import expect

    from askflow.bootstrap import Components
    from askflow.domain.messages import GradingDue
    from askflow.service_layer import handlers
    from askflow.service_layer.evaluation import grade_events
    from tests.test_ask_path import ask, rate, wait_terminal

    question = "How does catchup create runs for missed intervals?"
    earlier = ask(web_api, question)
    assert wait_terminal(web_api, earlier)["mode"] == "extractive"
    assert rate(web_api, earlier, {"positive": True})[0] == 200
    with Components(_settings(pg_url, "web")) as c:  # a reviewer approves, then the evaluation DAG's grading step
        handlers.review_answer(earlier, approved=True, reviewer="rita", via="admin", requests=c.requests)
        revision = c.requests.get(earlier).revision()
        run = grade_events([GradingDue(request_id=earlier, revision=revision)], requests=c.requests,
                           runs=c.evaluation_runs, store=c.store, embeddings=c.embeddings, grader=c.grader,
                           strategy=c.strategy(), answers_source=c.settings.answers_source,
                           answers_base_url=c.settings.answer_pages, batch_size=5, signals=c.signals,
                           collection=c.serving().collection)
    assert run.verified == 1

    page.goto(web_api)
    page.get_by_label("Your question").fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()
    page.wait_for_selector(".answer", timeout=90_000)
    served = page.locator(".answer").first
    note = served.locator(".cache-note")
    expect(note).to_contain_text("A verified answer to the same question")
    assert note.locator("a").get_attribute("href").endswith(f"answers/{earlier}")  # its page, not raw JSON
    page.screenshot(path=str(SCREENSHOTS / "web-cached-answer-phone.png"), full_page=True)

    note.get_by_role("button", name="Get a fresh answer").click()
    expect(page.locator(".answer")).to_have_count(2, timeout=90_000)
    fresh = page.locator(".answer").nth(1)
    assert "Extractive mode" in fresh.locator(".mode-note").inner_text()
    assert fresh.locator(".cache-note").is_hidden()
    fresh_id = fresh.get_attribute("data-request-id")
    stored = firestore.Client(project="askflow-test").collection("requests").document(fresh_id).get().to_dict()
    assert stored["fresh"] is True and stored["question"] == question


def test_answers_render_as_safe_markdown_and_no_source_url_runs_script(page, web_api):
    import json

    record = {"request_id": "r1", "question": "Pools?", "status": "complete", "mode": "llm", "sources": [
        {"n": 1, "title": "Evil", "url": "javascript:alert(document.domain)"},
        {"n": 2, "title": "Pools", "url": "https://airflow.apache.org/docs/pools.html"}],
        "answer": "Use **pools** and `pool_slots` [1].\n\n> A pool has slots [2].\n\n- one\n"
                  "- <img src=x onerror=alert(1)>"}
    page.route("**/requests", lambda route: route.fulfill(status=202, content_type="application/json",
                                                          body='{"request_id": "r1", "status": "pending"}'))
    page.route("**/requests/r1", lambda route: route.fulfill(status=200, content_type="application/json",
                                                             body=json.dumps(record)))
    page.goto(web_api)
    page.get_by_label("Your question").fill("Pools?")
    page.get_by_role("button", name="Ask", exact=True).click()
    text = page.locator(".answer .answer-text")
    text.wait_for()
    assert "**" not in text.inner_text() and "> " not in text.inner_text()
    assert text.locator("strong").inner_text() == "pools" and text.locator("code").inner_text() == "pool_slots"
    assert text.locator("blockquote").count() == 1 and text.locator("li").count() == 2
    assert text.locator("img").count() == 0  # text, never HTML
    links = {a.inner_text(): a.get_attribute("href") for a in text.locator("a").all()}
    assert links == {"[1]": "#", "[2]": "https://airflow.apache.org/docs/pools.html"}
    assert page.locator(".answer .sources a").first.get_attribute("href") == "#"


@pytest.fixture(scope="module")
def keyed_api(local_stack, indexed, pg_url) -> str:  # noqa: F811
    api, _ = local_stack.start_functions(_settings(pg_url, "webkey", api_key="a-deployment-api-key"))
    return api.url


def test_the_page_works_when_the_api_needs_a_key_and_others_still_need_the_key(page, keyed_api):
    from tests.test_ask_path import call

    assert call("POST", f"{keyed_api}requests", b'{"question": "q?"}')[0] == 401
    page.goto(keyed_api)
    question = page.get_by_label("Your question")
    question.fill("How do tasks pull an XCom value?")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.wait_for_selector(".answer", timeout=90_000)
    assert page.locator(".answer .sources a").count() >= 1
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "askflow_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    issued, _, signature = cookie["value"].partition(".")
    forged = f"{int(issued) + 1}.{signature}"
    assert call("POST", f"{keyed_api}requests", b'{"question": "q?"}',
                headers={"Cookie": f"askflow_session={forged}"})[0] == 401
    assert call("POST", f"{keyed_api}requests", b'{"question": "q?"}',
                headers={"Cookie": f"askflow_session={cookie['value']}"})[0] == 202
    assert call("POST", f"{keyed_api}requests", b'{"question": "q?"}',
                headers={"X-API-Key": "a-deployment-api-key"})[0] == 202


def test_errors_are_shown_in_words(page, web_api):
    page.route("**/requests", lambda route: route.fulfill(
        status=503, content_type="application/json", body='{"error": "could not queue the question"}'))
    page.goto(web_api)
    page.get_by_label("Your question").fill("Anything?")
    page.get_by_role("button", name="Ask", exact=True).click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert alert.inner_text() == "could not queue the question"
    assert page.get_by_role("button", name="Ask", exact=True).is_enabled()


def test_static_files_are_served_with_their_types_and_unknown_ones_are_404(web_api):
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{web_api}assets/app.js") as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert "Content-Security-Policy" in response.headers
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{web_api}assets/config.py")
    assert missing.value.code == 404


def test_a_not_sure_answer_says_so_first_and_shows_the_teams_answer_when_it_comes(page, web_api, pg_url):
    import datetime as dt

    from playwright.sync_api import expect

    from askflow.bootstrap import Components
    from askflow.domain.clock import utcnow
    from askflow.domain.model import Escalation, TeamAnswer

    page.goto(web_api)
    page.get_by_label("Your question").fill("Sourdough starter hydration ratios?")  # nothing indexed covers it
    page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator(".answer").first
    expect(answer.locator(".unsure-note")).to_contain_text("I'm not sure the docs cover this", timeout=90_000)
    request_id = answer.get_attribute("data-request-id")
    with Components(_settings(pg_url, "web")) as c:  # the team is asked (the stack here has no Slack channel)
        asked = utcnow()
        document = firestore.Client(project="askflow-test").collection("requests").document(request_id)
        document.update({"escalation": Escalation(state="open", why="no source matched the question", asked_at=asked,
                                                  channel="CESC", ts="1.1", thread="CESC/1.1").model_dump()})
        page.reload()
        restored = page.locator(".answer").first
        expect(restored.locator(".unsure-note")).to_contain_text("I've asked the team")
        assert restored.locator(".ask-person").is_hidden()  # asked already
        c.requests.answer_escalation(request_id, TeamAnswer(
            text="Use **100%** hydration: equal weights of flour and water.", by="slack:UTEAM", marked_by="slack:URV",
            at=asked + dt.timedelta(minutes=5), ts="1.2"))
    team = restored.locator(".team-answer")
    expect(team).to_be_visible(timeout=30_000)  # the page looked again, and shows it without a reload
    expect(team.locator(".team-text strong")).to_have_text("100%")
    assert "UTEAM" not in team.inner_text() and "a team member" in team.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "web-team-answer-phone.png"), full_page=True)
