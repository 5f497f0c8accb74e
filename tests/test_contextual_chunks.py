"""Contextual chunks: the cheap model places each chunk in its document at ingestion (one chat completion per chunk,
or an OpenAI Batch API job), against the loopback OpenAI wire server and pgvector. One call per new chunk and none
for an unchanged one, the context stored and keyword-indexed, the cap, withheld audiences, the Batch API's files and
batches, the docs DAG's mapped step, ``askflow stats`` and ``askflow eval retrieval --contextual``."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.cost import PriceTable
from askflow.domain.errors import ModelUnavailable
from askflow.domain.model import Usage
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.contextual import CONTEXT_MODEL, REPLY_TOKENS, ContextRun, ContextRunLog, Contextualizer
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths
from askflow.service_layer.stats import usage_stats
from tests.support.dag_runner import dag_env, run_dag

PAGES = {
    "pools.md": "# Pools\n\nThe Zanzibar scheduler limits how many tasks run at once with pools.\n\n"
                "## Sizing\n\nSet it to 3 in the task's arguments to keep one slot free.\n\n"
                "## Priorities\n\nHigher weights run first when slots are scarce.\n",
    "xcoms.md": "# XComs\n\nXComs pass small values between the tasks of a DAG.\n\n"
                "## Pulling\n\nCall xcom_pull with the task id that pushed the value.\n",
}
HANDBOOK = "# Handbook\n\nOur on-call rota lives in the Falkland spreadsheet.\n\n## Pay\n\nBonuses are paid in March.\n"
DOC_IDS = ["docs:pools.md", "docs:xcoms.md"]
CHUNKS = 5  # the two pages' sections


@pytest.fixture
def store(pg_url, collection_name):
    store = PgVectorStore(url=pg_url, collection=collection_name)
    yield store
    store.close()


def write_pages(folder, pages=PAGES):
    folder.mkdir(exist_ok=True)
    for name, text in pages.items():
        (folder / name).write_text(text)
    return folder


def index(folder, store, embeddings, *, source="docs", audiences=None):
    return index_documents(load_paths([folder], source=source), store=store, embeddings=embeddings,
                           strategy=ChunkingStrategy(), source=source, audiences=audiences)


def contextualizer(wire, store, embeddings, tmp_path, *, retrying=None, **settings) -> Contextualizer:
    """The contextual step as the DAG builds it, its chat model and ``openai`` client on the loopback server."""
    s = Settings(openai_base_url=wire.base_url, openai_api_key="test-key", data_dir=tmp_path,
                 contextual_batch_poll_s=0.01, **settings)
    with bootstrap(s) as components:
        return Contextualizer.configured(s, store=store, embeddings=embeddings,
                                         model=components.chat_model(s.cheap_model), prices=components.prices,
                                         client=components.openai_client, retrying=retrying or components.retrying,
                                         collection="test")


def chats(wire) -> list[dict]:
    return [call["body"] for call in wire.calls if call["path"].endswith("/chat/completions")]


def posted(wire, path: str) -> list[dict]:
    return [call["body"] for call in wire.calls if call["path"] == path]


def stored(store, doc_ids=DOC_IDS):
    return [chunk for doc_id in doc_ids for chunk in store.document_chunks(doc_id, audiences=None)]


def test_one_call_per_new_chunk_and_none_again_for_an_unchanged_one(store, wire, hash_embeddings, tmp_path):
    docs = write_pages(tmp_path / "docs")
    index(docs, store, hash_embeddings)
    assert store.count() == CHUNKS and all(chunk.context == "" for chunk in stored(store))  # indexed at once
    step = contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="sync")

    first = step.run(DOC_IDS, run_id="first")
    asked = chats(wire)
    assert len(asked) == CHUNKS and (first.calls, first.contextualized, first.api) == (CHUNKS, CHUNKS, "sync")
    assert all(chunk.context and chunk.metadata[CONTEXT_MODEL] == "gpt-4o-mini" for chunk in stored(store))
    assert {body["model"] for body in asked} == {"gpt-4o-mini"}
    # priced from what the endpoint reported (the loopback: a quarter of the characters), at the default prices
    assert first.prompt_tokens == sum(len(body["messages"][-1]["content"]) // 4 for body in asked)
    assert first.cost_usd == pytest.approx((first.prompt_tokens * 0.15 + first.completion_tokens * 0.60) / 1e6)

    wire.calls.clear()
    second = step.run(DOC_IDS, run_id="second")
    assert chats(wire) == [] and (second.calls, second.cached, second.cost_usd) == (0, CHUNKS, 0.0)

    (docs / "xcoms.md").write_text(PAGES["xcoms.md"].replace("small values", "small JSON values"))
    index(docs, store, hash_embeddings)  # another version of the page: its chunks are new ones
    third = step.run(DOC_IDS, run_id="third")
    assert len(chats(wire)) == 2 and (third.calls, third.cached) == (2, 3)
    runs = ContextRunLog(tmp_path / "contextual").between(utcnow() - dt.timedelta(hours=1), utcnow())
    assert [(run.run_id, run.calls) for run in runs] == [("first", CHUNKS), ("second", 0), ("third", 2)]


def test_the_context_is_stored_embedded_and_found_by_keywords(store, wire, hash_embeddings, tmp_path):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    sizing = next(chunk for chunk in stored(store) if chunk.section == "Sizing")
    assert "zanzibar" not in sizing.embedding_text.lower()  # only its page's opening names the scheduler
    before = {hit.chunk.chunk_id for hit in store.keyword_search("zanzibar", limit=10, audiences=None)}
    assert sizing.chunk_id not in before

    contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="sync").run(DOC_IDS, run_id="run")
    placed = next(chunk for chunk in stored(store) if chunk.section == "Sizing")
    assert placed.chunk_id == sizing.chunk_id and "Zanzibar scheduler" in placed.context
    assert placed.embedding_text in hash_embeddings.embedded  # embedded again with its context
    found = [hit.chunk for hit in store.keyword_search("zanzibar", limit=10, audiences=None)]
    assert placed in found  # found by a word only its context has


def test_no_call_is_made_that_would_take_a_run_past_its_cap(store, wire, hash_embeddings, tmp_path):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    # input free, a reply token a cent: a call is estimated at REPLY_TOKENS cents, and costs what its reply takes
    prices = {"gpt-4o-mini": [0.0, 10_000.0]}
    estimate = REPLY_TOKENS * 0.01
    step = contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="sync", model_prices=prices,
                          contextual_max_usd_per_run=1.5 * estimate)

    capped = step.run(DOC_IDS, run_id="capped")
    assert 0 < capped.calls < CHUNKS and capped.calls + capped.left == CHUNKS and len(chats(wire)) == capped.calls
    assert capped.cost_usd <= 1.5 * estimate < capped.cost_usd + estimate  # the next call would have passed it
    assert sum(bool(chunk.context) for chunk in stored(store)) == capped.calls
    rest = step.run(DOC_IDS, run_id="rest")  # the next run takes up what was left, within its own cap
    assert rest.cached == capped.calls and rest.calls > 0 and rest.left == capped.left - rest.calls


def test_a_runs_cap_is_shared_by_its_mapped_tasks(store, wire, hash_embeddings, tmp_path):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    batch_estimate = REPLY_TOKENS * 0.01 / 2
    step = contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="batch",
                          model_prices={"gpt-4o-mini": [0.0, 10_000.0]}, contextual_max_usd_per_run=3 * batch_estimate)

    units = step.plan(DOC_IDS, documents_per_unit=1)
    assert [unit.doc_ids for unit in units] == [["docs:pools.md"], ["docs:xcoms.md"]]
    assert sum(unit.budget_usd for unit in units) == pytest.approx(3 * batch_estimate)
    runs = [step.run(unit.doc_ids, run_id="run", part=n, budget_usd=unit.budget_usd) for n, unit in enumerate(units)]
    assert len(wire.batch_requests) == 3 and sum(run.left for run in runs) == CHUNKS - 3
    assert sum(run.cost_usd for run in runs) <= 3 * batch_estimate
    assert step.plan(DOC_IDS, documents_per_unit=1)[0].doc_ids == ["docs:xcoms.md"]  # what is left, next run


def test_withheld_audiences_text_never_reaches_the_model_and_gets_no_context(store, wire, hash_embeddings, tmp_path):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    index(write_pages(tmp_path / "handbook", {"rota.md": HANDBOOK}), store, hash_embeddings, source="handbook",
          audiences=["employees"])
    every = [*DOC_IDS, "handbook:rota.md"]
    withholding = contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="sync",
                                 withheld_audiences=["employee*"])

    run = withholding.run(every, run_id="withheld")
    assert (run.calls, run.withheld) == (CHUNKS, 2)
    assert not [body for body in chats(wire) if "Falkland" in json.dumps(body) or "Bonuses" in json.dumps(body)]
    assert [chunk.context for chunk in stored(store, ["handbook:rota.md"])] == ["", ""]

    contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="sync").run(every, run_id="open")
    assert all(chunk.context for chunk in stored(store, ["handbook:rota.md"]))
    wire.calls.clear()
    again = withholding.run(every, run_id="withheld again")  # withheld since: the context written before goes
    assert chats(wire) == [] and again.calls == 0
    assert [chunk.context for chunk in stored(store, ["handbook:rota.md"])] == ["", ""]
    assert "Falkland" not in " ".join(hit.chunk.context for hit in store.keyword_search(
        "falkland", limit=10, audiences=None))


def test_the_batch_api_round_trip_through_files_and_batches(store, wire, hash_embeddings, tmp_path):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    sizing = next(chunk for chunk in stored(store) if chunk.section == "Sizing")
    wire.batch_failing = {sizing.chunk_id}  # one request of the job fails: its chunk waits for the next run
    step = contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="batch")

    run = step.run(DOC_IDS, run_id="batch")
    assert chats(wire) == []  # nothing asked one by one
    assert [body["purpose"] for body in posted(wire, "/v1/files")] == ["batch"]
    (created,) = posted(wire, "/v1/batches")
    assert created["endpoint"] == "/v1/chat/completions" and created["completion_window"] == "24h"
    lines = wire.batch_requests
    assert sorted(line["custom_id"] for line in lines) == sorted(chunk.chunk_id for chunk in stored(store))
    assert {(line["method"], line["url"], line["body"]["model"]) for line in lines} == {
        ("POST", "/v1/chat/completions", "gpt-4o-mini")}
    assert (run.api, run.calls, run.contextualized, run.failed) == ("batch", CHUNKS - 1, CHUNKS - 1, 1)
    assert {chunk.chunk_id for chunk in stored(store) if not chunk.context} == {sizing.chunk_id}
    at_once = PriceTable(Settings().model_prices).cost(
        [Usage("gpt-4o-mini", prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens)])
    assert run.cost_usd == pytest.approx(at_once / 2)  # the Batch API at half price

    wire.batch_failing.clear()
    wire.batch_requests.clear()
    again = step.run(DOC_IDS, run_id="batch again")
    assert [line["custom_id"] for line in wire.batch_requests] == [sizing.chunk_id]
    assert (again.calls, again.cached) == (1, CHUNKS - 1) and all(chunk.context for chunk in stored(store))


def test_a_step_tried_again_takes_up_the_job_it_submitted(store, wire, hash_embeddings, tmp_path):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    wire.batch_polls = 3

    def failing_on_the_first_poll(fn, *args, **kwargs):
        if getattr(fn, "__name__", "") == "retrieve" and not failing_on_the_first_poll.failed:
            failing_on_the_first_poll.failed = True
            raise ModelUnavailable("model endpoint failed 4 times: APIConnectionError")
        return fn(*args, **kwargs)

    failing_on_the_first_poll.failed = False
    with pytest.raises(ModelUnavailable):
        contextualizer(wire, store, hash_embeddings, tmp_path, retrying=failing_on_the_first_poll).run(
            DOC_IDS, run_id="tried", part=0)
    contextualizer(wire, store, hash_embeddings, tmp_path).run(DOC_IDS, run_id="tried", part=0)
    assert len(posted(wire, "/v1/files")) == 1 and len(posted(wire, "/v1/batches")) == 1  # one job, paid once
    assert len(wire.batch_requests) == CHUNKS and all(chunk.context for chunk in stored(store))
    (record,) = ContextRunLog(tmp_path / "contextual").between(utcnow() - dt.timedelta(hours=1), utcnow())
    assert record.calls == CHUNKS  # the second try's record replaced the first's


@pytest.mark.parametrize("endpoint", ["without a Batch API", "whose job failed"])
def test_the_batch_api_falls_back_to_a_call_per_chunk(store, wire, hash_embeddings, tmp_path, endpoint):
    index(write_pages(tmp_path / "docs"), store, hash_embeddings)
    if endpoint == "without a Batch API":
        wire.batch_api = False
    else:
        wire.batch_outcome = "failed"
    run = contextualizer(wire, store, hash_embeddings, tmp_path, contextual_api="batch").run(DOC_IDS, run_id="run")
    assert len(chats(wire)) == CHUNKS and (run.api, run.contextualized) == ("sync", CHUNKS)
    assert all(chunk.context for chunk in stored(store))


@pytest.mark.airflow
def test_the_docs_dag_gives_chunks_their_contexts_in_a_mapped_task(airflow_env, pg_url, wire, collection_name,
                                                                   tmp_path):
    docs = write_pages(tmp_path / "docs")
    env = dag_env(airflow_env, pg_url, wire, collection_name, contextual_chunks=True, contextual_api="batch",
                  contextual_batch_poll_s=0.05, data_dir=tmp_path / "data")
    conf = {"docs_location": str(docs), "collection": collection_name, "batch_size": 1}
    store = PgVectorStore(url=pg_url, collection=collection_name)

    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    assert all(chunk.context for chunk in stored(store)) and len(stored(store)) == CHUNKS
    assert len(posted(wire, "/v1/batches")) == 2 and len(wire.batch_requests) == CHUNKS  # a job per mapped task
    records = ContextRunLog(tmp_path / "data" / "contextual").between(utcnow() - dt.timedelta(hours=1), utcnow())
    assert sorted(record.part for record in records) == [0, 1] and len({record.run_id for record in records}) == 1
    assert sum(record.contextualized for record in records) == CHUNKS and all(r.cost_usd > 0 for r in records)

    wire.calls.clear()
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    assert not [call for call in wire.calls if not call["path"].endswith("/embeddings")]  # no model call at all
    assert len(ContextRunLog(tmp_path / "data" / "contextual").between(utcnow() - dt.timedelta(hours=1),
                                                                       utcnow())) == 2  # no step ran
    store.close()


def test_stats_add_up_what_contextual_chunks_cost(tmp_path):
    now = utcnow()

    def run(run_id, part, *, contextualized, calls, cost_usd, left=0, hours_ago=1):
        return ContextRun(run_id=run_id, part=part, model="gpt-4o-mini", api="batch", contextualized=contextualized,
                          calls=calls, cost_usd=cost_usd, left=left, started_at=now - dt.timedelta(hours=hours_ago))

    log = ContextRunLog(tmp_path / "contextual")
    for record in (run("monday", 0, contextualized=40, calls=40, cost_usd=0.012),
                   run("monday", 1, contextualized=9, calls=10, cost_usd=0.003, left=7),
                   run("eval-20261201", 0, contextualized=100, calls=100, cost_usd=0.03),
                   run("last month", 0, contextualized=500, calls=500, cost_usd=0.15, hours_ago=24 * 30)):
        log.save(record)
    week = log.between(now - dt.timedelta(days=7), now)
    stats = usage_stats([], start=now - dt.timedelta(days=7), end=now, context_runs=week)
    assert stats.contextual.model_dump() == {"runs": 2, "contextualized": 149, "calls": 150, "left": 7,
                                             "cost_usd": pytest.approx(0.045)}
    assert usage_stats([], start=now - dt.timedelta(days=7), end=now).contextual.cost_usd == 0.0


def test_askflow_stats_prints_what_contextual_chunks_cost(local_stack, tmp_path):
    from tests.test_cli import askflow

    ContextRunLog(tmp_path / "contextual").save(ContextRun(
        run_id="manual__2026-12-01", model="gpt-4o-mini", api="batch", contextualized=48, calls=50, left=3,
        cost_usd=0.0125, started_at=utcnow() - dt.timedelta(hours=2)))
    env = {**local_stack.env, "ASKFLOW_DATA_DIR": str(tmp_path), "ASKFLOW_REQUESTS_COLLECTION": "requests_ctx"}
    table = askflow("stats", "--period", "1d", env=env)
    assert table.returncode == 0, table.stderr
    assert "contextual chunks (runs: 1): 48 given a context, 50 calls, $0.0125; 3 left past a run's cap" in table.stdout


def test_eval_retrieval_contextual_measures_contextual_chunks_in_their_own_collection(pg_url, collection_name, wire,
                                                                                      tmp_path):
    from tests.test_cli import DOCS, askflow

    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"id": "q1", "question": "How do I pull an XCom?", "gold": ["xcoms.rst"]}))
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name, "ASKFLOW_DATA_DIR": str(tmp_path),
           "ASKFLOW_CONTEXTUAL_API": "sync"}
    args = ["eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), "--contextual",
            "--details", str(tmp_path / "details.jsonl")]
    refused = askflow(*args, env=env)
    assert refused.returncode == 2 and "--contextual needs a chat model" in refused.stderr

    env |= {"OPENAI_BASE_URL": wire.base_url, "OPENAI_API_KEY": "test-key"}
    first = askflow(*args, env=env)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    contextual = PgVectorStore(url=pg_url, collection=f"{collection_name}_eval_all_minilm_l6_v2_contextual")
    chunks = contextual.count()
    assert summary["context_model"] == "gpt-4o-mini" and summary["contextualized"] == chunks == len(chats(wire))
    assert summary["contextual_cost_usd"] > 0 and summary["contexts_left"] == 0 and "hit@5" in summary
    assert all(chunk.context for chunk in contextual.chunks(after=None, limit=100))
    contextual.close()
    plain = PgVectorStore(url=pg_url, collection=f"{collection_name}_eval_all_minilm_l6_v2")
    plain.ensure_collection(384)
    assert plain.count() == 0  # the plain evaluation's collection holds no contextual chunks
    plain.close()
