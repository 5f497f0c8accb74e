"""What a newcomer meets first (issue 25): the demo on their own docs with its URLs, admin key and exports; the CLI
saying what to set instead of a traceback; settings refused outside their range by name; progress on stderr for
long steps; and the web page's feed, answer links and rating buttons in Chromium."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from askflow.config import load_settings
from askflow.domain.errors import ConfigurationError
from askflow.entrypoints.cli import _Progress
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import EMBED_SLICE, index_documents
from askflow.ingest.sources.files import parse_document
from tests.fakes import FakeVectorStore, HashEmbeddings
from tests.support.loopback import LoopbackServer
from tests.test_web_page import CHROMIUM, browser, page  # noqa: F401 - Chromium, at phone width

DOCS = Path(__file__).parent / "data" / "docs"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
ROOT = Path(__file__).resolve().parent.parent
# What reaches Google Cloud or a running stack, left out so that a command meets the setup a newcomer has
OUTSIDE = ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS",
           "GOOGLE_CLOUD_PROJECT", "ASKFLOW_DATABASE_URL", "ASKFLOW_COLLECTION", "ASKFLOW_LEARNED_COLLECTION",
           "ASKFLOW_API_KEY")


def bare_env(tmp_path: Path, **more: str) -> dict[str, str]:
    """The environment of a fresh shell: no emulators, no Google credentials (gcloud's folder and the metadata
    server pointed at nothing on loopback, so no packet leaves), a data folder of its own."""
    env = {key: value for key, value in os.environ.items() if key not in OUTSIDE}
    return env | {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
                  "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9",
                  "ASKFLOW_DATA_DIR": str(tmp_path / "data"), **more}


def askflow(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "askflow.entrypoints.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


# -- the CLI says what is wrong with the setup ------------------------------------------------------------------

@pytest.mark.parametrize("command", [["stats"], ["insights"]])
def test_without_the_demos_exports_stats_and_insights_say_what_to_set(tmp_path, command):
    run = askflow(*command, env=bare_env(tmp_path))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("askflow: no Google credentials"), run.stderr
    assert "FIRESTORE_EMULATOR_HOST" in run.stderr and "gcloud auth application-default login" in run.stderr
    assert "Traceback" not in run.stderr


def test_ask_on_a_collection_never_indexed_or_a_database_not_running_says_what_to_set(tmp_path, local_stack, pg_url,
                                                                                       collection_name):
    firestore = {"FIRESTORE_EMULATOR_HOST": local_stack.env["FIRESTORE_EMULATOR_HOST"]}  # the requests are found
    never_indexed = askflow("ask", "How do I pull an XCom?", env=bare_env(
        tmp_path, ASKFLOW_DATABASE_URL=pg_url, ASKFLOW_COLLECTION=collection_name,
        ASKFLOW_LEARNED_COLLECTION=f"{collection_name}_learned", **firestore))
    assert never_indexed.returncode == 2, never_indexed.stderr
    assert never_indexed.stderr.startswith("askflow: the database has no such table"), never_indexed.stderr
    assert collection_name in never_indexed.stderr and "askflow ingest PATH" in never_indexed.stderr
    assert "Traceback" not in never_indexed.stderr

    not_running = askflow("ask", "How do I pull an XCom?", env=bare_env(
        tmp_path, ASKFLOW_DATABASE_URL="postgresql://askflow@127.0.0.1:9/askflow", **firestore))
    assert not_running.returncode == 2, not_running.stderr
    assert not_running.stderr.startswith("askflow: cannot reach the database"), not_running.stderr
    assert "ASKFLOW_DATABASE_URL" in not_running.stderr and "Traceback" not in not_running.stderr


# -- settings outside their range ----------------------------------------------------------------------------

def test_a_setting_outside_its_documented_range_stops_the_cli_by_name(tmp_path):
    run = askflow("ask", "hi", env=bare_env(tmp_path, ASKFLOW_HYBRID_ALPHA="7"))
    assert run.returncode == 2
    assert run.stderr.startswith("askflow: bad setting: ASKFLOW_HYBRID_ALPHA: "), run.stderr
    assert "less than or equal to 1" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(("variable", "value"), [
    ("ASKFLOW_HYBRID_ALPHA", "7"), ("ASKFLOW_HYBRID_ALPHA", "-0.1"), ("ASKFLOW_PGVECTOR_EF_SEARCH", "1001"),
    ("ASKFLOW_SOURCES_PER_ANSWER", "0"), ("ASKFLOW_REWORDINGS", "-1"), ("ASKFLOW_CHUNK_SIZE", "0"),
    ("ASKFLOW_LLM_TIMEOUT_S", "0"), ("ASKFLOW_LLM_MAX_ATTEMPTS", "0"), ("ASKFLOW_RETRIEVAL_CANDIDATES", "0"),
    ("ASKFLOW_REQUEST_DEADLINE_S", "-5"), ("ASKFLOW_EVALUATION_BATCH_SIZE", "0"), ("ASKFLOW_FINETUNE_MARGIN", "-1"),
])
def test_settings_outside_their_range_are_refused_by_name(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"bad setting: {variable}: "), refused.value
    assert repr(value) in str(refused.value)


def test_the_ends_of_a_range_are_accepted(monkeypatch):
    for alpha in ("0", "1"):
        monkeypatch.setenv("ASKFLOW_HYBRID_ALPHA", alpha)
        assert load_settings().hybrid_alpha == float(alpha)
    monkeypatch.setenv("ASKFLOW_PGVECTOR_EF_SEARCH", "1000")
    assert load_settings().pgvector_ef_search == 1000


def test_a_function_with_a_setting_out_of_range_answers_500_and_logs_the_variable(monkeypatch, caplog):
    import functions_framework

    monkeypatch.setenv("ASKFLOW_HYBRID_ALPHA", "7")
    app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/requests?good=true")
    assert response.status_code == 500 and "misconfigured" in response.get_json()["error"]
    assert "ASKFLOW_HYBRID_ALPHA" in caplog.text


# -- progress on stderr --------------------------------------------------------------------------------------

def test_progress_is_a_line_per_tenth_of_a_stage_and_its_end(capsys):
    progress = _Progress()
    for done in range(0, 1001):
        progress("scoring questions", done, 1000)
    progress("scan", 500, 0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "scoring questions: 0/1000" and lines[-2] == "scoring questions: 1000/1000"
    assert len(lines) == 12 and lines[-1] == "scan: 500"  # 0, 100, ..., 1000: eleven lines, then the scan


def test_indexing_tells_its_progress_a_slice_of_chunks_at_a_time():
    strategy = ChunkingStrategy(splitter="recursive", chunk_size=200, chunk_overlap=0)
    documents = [parse_document(f"page{n}.md", f"# Page {n}\n\n" + " ".join(f"word{i}" for i in range(600)),
                                source="docs", url=f"file:///page{n}.md") for n in range(5)]
    embeddings = HashEmbeddings()
    calls: list[int] = []
    embed = embeddings.embed_documents
    embeddings.embed_documents = lambda texts: calls.append(len(texts)) or embed(texts)
    told: list[tuple[str, int, int]] = []
    result = index_documents(documents, store=FakeVectorStore(), embeddings=embeddings, strategy=strategy,
                             source="docs", progress=lambda *report: told.append(report))
    assert result.chunks_written > EMBED_SLICE
    assert max(calls) <= EMBED_SLICE and sum(calls) == result.chunks_written
    assert {stage for stage, _, _ in told} == {"embedding chunks"}
    assert [done for _, done, _ in told] == sorted(done for _, done, _ in told)
    assert told[-1][1:] == (result.chunks_written, result.chunks_written)


def test_eval_retrieval_tells_its_progress_on_stderr_and_keeps_stdout_for_results(tmp_path, pg_url,
                                                                                  collection_name):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in [
        {"question": "How do I pull an XCom?", "gold": ["xcoms.rst"]},
        {"question": "Disable catchup for old intervals", "gold": ["scheduling.md"]}]))
    run = askflow("eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), "--details",
                  str(tmp_path / "details.jsonl"), env={**os.environ, "ASKFLOW_DATABASE_URL": pg_url,
                                                        "ASKFLOW_COLLECTION": collection_name})
    assert run.returncode == 0, run.stderr
    assert re.search(r"^embedding chunks: (\d+)/\1$", run.stderr, re.MULTILINE), run.stderr
    assert "scoring questions: 2/2" in run.stderr.splitlines()
    assert json.loads(run.stdout.strip().splitlines()[-1])["questions"] == 2
    assert "scoring" not in run.stdout and "embedding" not in run.stdout


# -- the demo --------------------------------------------------------------------------------------------------

def test_the_demo_refuses_a_missing_or_empty_docs_folder_before_starting_anything(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not documentation")
    for folder, said in ((tmp_path / "missing", "no such folder"), (tmp_path / "empty", "no documentation files")):
        run = askflow("demo", "--docs", str(folder), "--no-wait", env=bare_env(tmp_path), timeout=60)
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"askflow: --docs {folder}: {said}"), run.stderr
        assert run.stdout == "" and "Traceback" not in run.stderr
    assert not (tmp_path / "data").exists()  # nothing was started


def test_the_demo_on_your_docs_says_what_it_indexed_and_prints_urls_key_and_exports_that_reach_it(tmp_path):
    env = bare_env(tmp_path, ASKFLOW_PROJECT_ID="askflow-newcomer-test", PYTHONUNBUFFERED="1")
    stderr = tmp_path / "demo.err"
    demo = subprocess.Popen([sys.executable, "-m", "askflow.entrypoints.cli", "demo", "--docs", str(DOCS)], env=env,
                            stdout=subprocess.PIPE, stderr=stderr.open("wb"), text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Rate an answer")):
            line = demo.stdout.readline()
            assert line, "".join(lines) + stderr.read_text()[-3000:]
            lines.append(line.rstrip("\n"))
        out = "\n".join(lines)
        print(out)  # shown when the test fails
        assert lines[0].startswith(f"askflow demo: it indexes the docs in {DOCS.resolve()} (3 files: ")
        assert "askflow demo, without --docs" in lines[1] and "askflow ingest LOCATION" in lines[2]
        assert re.search(r"^embedding chunks: (\d+)/\1$", stderr.read_text(), re.MULTILINE), stderr.read_text()
        assert re.search(r'^Q: What does ".+" cover\?$', out, re.MULTILINE)

        api = re.search(r"Open the web page:\s+(\S+)", out).group(1)
        for page_name, path in (("admin", "admin"), ("insights", "insights"), ("review queue", "admin/review")):
            assert re.search(rf"^  {page_name} +{re.escape(api + path)}$", out, re.MULTILINE), out
        key = re.search(r"^  admin key +(\S+)  \(made for this run", out, re.MULTILINE).group(1)
        assert _status(f"{api}admin", key) == 200 and _status(f"{api}admin", None) == 401

        exports = dict(shlex.split(line.removeprefix("  export "))[0].split("=", 1)
                       for line in lines if line.startswith("  export "))
        assert exports["ASKFLOW_API_KEY"] == key and exports["ASKFLOW_COLLECTION"] == "askflow_demo"
        shell = bare_env(tmp_path) | exports  # another shell, with nothing but the exports
        stats = askflow("stats", "--format", "json", env=shell)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["questions"] >= 1  # the demo's own question, in its Firestore
        answer = askflow("ask", "How do I pull an XCom?", env=shell)
        assert answer.returncode == 0, answer.stderr
        assert "[1] XComs" in answer.stdout
        this_hour = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(timespec="minutes")
        insights = askflow("insights", "--format", "json", "--end", this_hour, env=shell)
        assert insights.returncode == 0, insights.stderr
        assert json.loads(insights.stdout)["requests"] >= 1

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=90) == 0
    finally:
        if demo.poll() is None:  # an assertion failed: still stop what the demo started
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=90)
            except subprocess.TimeoutExpired:
                demo.kill()


def _status(url: str, key: str | None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"X-API-Key": key} if key else {}),
                                    timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# -- the web page ----------------------------------------------------------------------------------------------

class PageServer(LoopbackServer):
    """The web page's files as the API function serves them (``askflow.web.static_response``), and its calls
    answered from ``records`` (``GET /requests/{id}``; ``POST /requests`` queues the next id of ``queue``) and
    ``feed`` (``GET /requests?good=true``); ratings are recorded."""

    def __init__(self) -> None:
        self.records: dict[str, dict] = {}
        self.feed: list[dict] = []
        self.queue: list[str] = []
        self.ratings: list[tuple[str, dict]] = []
        super().__init__()

    def _handler(self):
        from askflow.web import static_response

        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, payload: dict) -> None:
                self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def do_GET(self):  # noqa: N802 (http.server's name)
                path, _, query = self.path.partition("?")
                if path in ("/", "/index.html") or path.startswith("/assets/"):
                    body, status, headers = static_response(path.removeprefix("/assets/").lstrip("/") or "index.html")
                    self._send(status, body, headers)
                elif path == "/requests" and query == "good=true":
                    self._json(200, {"items": server.feed})
                elif path.startswith("/requests/") and path.removeprefix("/requests/") in server.records:
                    self._json(200, server.records[path.removeprefix("/requests/")])
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/requests":
                    self._json(202, {"request_id": server.queue.pop(0), "status": "pending",
                                     "asker_token": "t" * 22})
                elif self.path.endswith("/feedback"):
                    server.ratings.append((self.path.split("/")[2], body))
                    self._json(200, {"status": "rated"})
                else:
                    self._json(404, {"error": "not found"})

        return Handler


@pytest.fixture
def site():
    server = PageServer()
    yield server
    server.stop()


def _record(request_id: str, question: str, answer: str, **more) -> dict:
    return {"request_id": request_id, "question": question, "status": "complete", "mode": "llm", "answer": answer,
            "sources": [{"n": 1, "title": "Pools", "url": "https://docs.example.org/pools.html", "cited": True},
                        {"n": 2, "title": "XComs", "url": "https://docs.example.org/xcoms.html", "cited": True}],
            **more}


LONG = ("> Use **pools** to cap how many tasks run at once [1].\n\nA task takes `pool_slots` slots of its pool while "
        "it runs and waits when the pool is full; the scheduler never queues more than the pool holds. Tasks pass "
        "small values to each other as XComs, which are, then, acknowledged [2]. Large values belong in object "
        "storage instead.")


@needs_chromium
def test_recent_good_answers_render_as_answers_cut_outside_citations_and_link_to_their_pages(page, site):  # noqa: F811
    assert LONG[:280].endswith(" [2")  # a cut at 280 characters falls inside a citation
    site.feed = [_record("r-long", "How do pools limit tasks?", LONG),
                 _record("r-short", "What is an XCom?", "A small value one task passes to another [2].")]
    page.goto(f"{site.url}/")
    items = page.locator("#recent > li")
    items.first.locator(".answer-text").wait_for()
    assert items.count() == 2

    long_item, short_item = items.nth(0), items.nth(1)
    text = long_item.locator(".answer-text")
    assert text.locator("blockquote").count() == 1 and text.locator("strong").inner_text() == "pools"
    assert text.locator("code").inner_text() == "pool_slots"
    shown = text.inner_text()
    assert "**" not in shown and "`" not in shown and not shown.lstrip().startswith(">")
    assert not re.search(r"\[(?!\d+\])", shown), shown  # no citation cut in half
    assert shown.rstrip().endswith("the pool holds.")  # cut at the last sentence that ends within 280 characters
    assert {a.inner_text(): a.get_attribute("href") for a in text.locator("a").all()} == {
        "[1]": "https://docs.example.org/pools.html"}  # the citations shown link to their sources
    assert long_item.locator("a.recent-question").get_attribute("href") == f"{site.url}/answers/r-long"
    assert long_item.get_by_role("link", name="Read the whole answer").get_attribute("href") == (
        f"{site.url}/answers/r-long")

    assert short_item.locator(".answer-text").inner_text().strip() == "A small value one task passes to another [2]."
    assert short_item.get_by_role("link", name="Read the whole answer").count() == 0  # whole: nothing to read on
    assert short_item.locator("a.recent-question").get_attribute("href") == f"{site.url}/answers/r-short"


def _ask(page, site, request_id: str, record: dict) -> None:  # noqa: F811
    site.records[request_id] = record
    site.queue.append(request_id)
    page.get_by_role("textbox", name=re.compile("question$")).fill(record["question"])
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator(f'.answer[data-request-id="{request_id}"]').wait_for()


@needs_chromium
def test_a_cached_answer_and_stored_answers_link_to_answer_pages_not_raw_json(page, site):  # noqa: F811
    record = _record("r-new", "How do pools limit tasks?", "Pools cap running tasks [1], as answered before [2].",
                     mode="cached", cached_from="r-earlier", cache_similarity=1.0)
    record["sources"][1] = {"n": 2, "title": "Answer: pools", "url": "/requests/r-stored", "cited": True}
    page.goto(f"{site.url}/")
    _ask(page, site, "r-new", record)
    answer = page.locator('.answer[data-request-id="r-new"]')
    assert answer.get_by_role("link", name="See the earlier question").get_attribute("href") == (
        f"{site.url}/answers/r-earlier")
    assert answer.locator(".sources a").nth(1).get_attribute("href") == f"{site.url}/answers/r-stored"
    assert answer.locator(".sources a").nth(0).get_attribute("href") == "https://docs.example.org/pools.html"


@needs_chromium
def test_the_chosen_rating_shows_pressed_and_stays_so_after_a_reload(page, site):  # noqa: F811
    page.goto(f"{site.url}/")
    _ask(page, site, "r-rated", _record("r-rated", "How do pools limit tasks?", "Pools cap running tasks [1]."))
    answer = page.locator('.answer[data-request-id="r-rated"]')
    helpful = answer.get_by_role("button", name="Helpful", exact=True)
    unhelpful = answer.get_by_role("button", name="Not helpful", exact=True)
    assert helpful.get_attribute("aria-pressed") == "false" and unhelpful.get_attribute("aria-pressed") == "false"
    resting = helpful.evaluate("b => getComputedStyle(b).backgroundColor")

    helpful.click()
    answer.locator(".rating-status").get_by_text("Thanks").wait_for()
    assert site.ratings == [("r-rated", {"positive": True})]
    assert helpful.get_attribute("aria-pressed") == "true" and unhelpful.get_attribute("aria-pressed") == "false"
    assert helpful.evaluate("b => getComputedStyle(b).backgroundColor") != resting  # seen, not only announced

    page.reload()
    again = page.locator('.answer[data-request-id="r-rated"]')
    again.wait_for()
    assert again.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == "true"
    assert again.get_by_role("button", name="Not helpful", exact=True).get_attribute("aria-pressed") == "false"
    assert page.get_by_label("Follow-up question").is_visible()  # the thread goes on

    again.get_by_role("button", name="Not helpful", exact=True).click()
    again.locator(".rating-status").get_by_text("Thanks").wait_for()
    assert again.get_by_role("button", name="Helpful", exact=True).get_attribute("aria-pressed") == "false"
    assert again.get_by_role("button", name="Not helpful", exact=True).get_attribute("aria-pressed") == "true"


@needs_chromium
def test_the_placeholder_says_what_the_demo_indexed_and_how_to_index_yours(page, site):  # noqa: F811
    page.goto(f"{site.url}/")
    placeholder = page.get_by_label("Your question").get_attribute("placeholder")
    assert "askflow's own" in placeholder and "--docs" in placeholder
    assert "tasks" not in placeholder  # no Airflow question the demo's docs cannot answer
