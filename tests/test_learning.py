"""The learning loop on the real Postgres: graded answers vote on their sources once, priors reorder only close
candidates, verified answers are served again (and only those), and ``askflow eval feedback`` measures a round."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from askflow.adapters.memory import InMemoryEvaluationRuns, InMemoryRequestStore
from askflow.adapters.pgvector_learned import PgLearnedSignals
from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import Components
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.messages import GradingDue
from askflow.domain.model import ASKER_RATER, Chunk, LearnedAnswer, Rating, Request, ScoredChunk, Source, token_sha
from askflow.entrypoints import cli
from askflow.grading.graders import HeuristicGrader
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths
from askflow.learning.questions import difference
from askflow.learning.ranking import LearnedRanking
from askflow.retrieval.ranking import RankedDocument, in_order
from askflow.service_layer import handlers
from askflow.service_layer.evaluation import grade_events
from tests.fakes import FakeVectorStore

DOCS = Path(__file__).parent / "data" / "docs"
QUESTION = "How do tasks pull an XCom value from another task?"


@pytest.fixture
def loop(pg_url, minilm, collection_name, wire):
    """The production answerer (a loopback model, so model calls can be counted) over an indexed collection, and
    what grading would learn into."""
    settings = Settings(database_url=pg_url, collection=collection_name, learned_collection=f"{collection_name}_l",
                        openai_base_url=wire.base_url, openai_api_key="test-key", cheap_model="loopback-cheap",
                        strong_model="loopback-strong", llm_backoff_max_s=0.1, cache_threshold=0.8)
    components = Components(settings)
    store = PgVectorStore(url=pg_url, collection=collection_name)
    signals = PgLearnedSignals(url=pg_url, table=settings.learned_collection)
    index_documents(load_paths([DOCS], source="docs"), store=store, embeddings=minilm,
                    strategy=components.strategy(), source="docs")
    requests = InMemoryRequestStore()

    class Loop:
        answerer = components.answerer_for(store, minilm, collection=collection_name, signals=signals,
                                           requests=lambda: requests)
        grader = components.grader  # the model judge (the loopback model grades every item 4/4)

        @staticmethod
        def asked(request_id: str, question: str, *, positive: bool | None = True) -> Request:
            """A request answered by the production answerer, stored, and rated by its asker."""
            now = utcnow()
            answer = Loop.answerer.answer(question)
            request = Request(request_id=request_id, question=question, created_at=now,
                              asker_sha=token_sha(request_id)).completed(answer, at=now)
            requests.create(request)
            if positive is not None:
                requests.rate(request_id, ASKER_RATER, Rating(positive=positive, at=now))
            return requests.get(request_id)

        @staticmethod
        def grade(*request_ids: str, grader=None):
            events = [GradingDue(request_id=r, revision=requests.get(r).revision()) for r in request_ids]
            return grade_events(events, requests=requests, runs=InMemoryEvaluationRuns(), store=store,
                                embeddings=minilm, grader=grader or Loop.grader, strategy=components.strategy(),
                                answers_source="answers", answers_base_url="/requests", batch_size=2,
                                signals=signals, collection=collection_name)

    Loop.store, Loop.signals, Loop.requests, Loop.wire, Loop.minilm = store, signals, requests, wire, minilm
    Loop.components = components
    yield Loop
    signals.close()
    store.close()


def _chats(wire) -> int:
    return len([c for c in wire.calls if c["path"].endswith("/chat/completions")])


def test_a_grading_batch_votes_once_per_answer_and_redelivery_changes_nothing(loop):
    good = loop.asked("good", QUESTION, positive=True)
    bad = loop.asked("bad", "Which cron expression runs a DAG every day?", positive=False)
    private = loop.asked("private", "Mail jane.doe@example.com: how do tasks pull an XCom?", positive=True)
    run = loop.grade("good", "bad", "private", "good", "bad")  # duplicates in one batch
    assert (run.graded, run.good, run.skipped) == (3, 1, 0)

    cited = sorted({s.doc_id for r in (good, bad, private) for s in r.sources})
    records = {r.request_id: r for r in loop.signals.citing(cited)}
    assert set(records) == {"good", "bad"}  # the private answer is no evidence at all
    assert records["good"].vote == 1 and records["good"].verified
    assert records["bad"].vote == -1 and not records["bad"].verified
    assert set(records["good"].cited) == {s.doc_id for s in good.sources if f"[{s.n}]" in good.answer}

    redelivered = loop.grade("good", "bad", "private")
    assert (redelivered.graded, redelivered.skipped) == (0, 3)
    again = {r.request_id: r for r in loop.signals.citing(cited)}
    assert again == records


def test_a_prior_reorders_close_candidates_never_lifts_a_document_that_matched_nothing(pg_url, collection_name):
    store, signals = FakeVectorStore(), PgLearnedSignals(url=pg_url, table=f"{collection_name}_prior")
    chunks = {name: Chunk(doc_id=f"docs:{name}", index=0, content=name, title=name, section="", url="", sha="v1")
              for name in ("strong", "close", "weak", "nothing")}
    store.upsert(list(chunks.values()), [[1.0]] * len(chunks))
    ranked = [RankedDocument(f"docs:{n}", score, [ScoredChunk(chunks[n], score)])
              for n, score in (("strong", 1.0), ("close", 0.97), ("weak", 0.5), ("nothing", 0.0))]
    ranking = LearnedRanking(signals=signals, store=store, collection="c", embedding_model="m", prior_weight=0.1,
                             prior_strength=2.0, association_weight=0.5, min_similarity=0.6)
    try:
        assert ranking.rerank(ranked) == ranked  # no evidence: today's ranking, untouched

        votes = [("strong", -1)] * 20 + [("close", 1)] * 20 + [("weak", 1)] * 20 + [("nothing", 1)] * 20
        signals.record([_vote(f"r{i}", f"docs:{name}", vote) for i, (name, vote) in enumerate(votes)],
                       [None] * len(votes))
        order = [d.doc_id for d in in_order(ranking.rerank(ranked))]
        assert order == ["docs:close", "docs:strong", "docs:weak", "docs:nothing"]
        scores = {d.doc_id: d.score for d in ranking.rerank(ranked)}
        assert scores["docs:nothing"] == 0.0  # a document that matched nothing stays where it was
        assert scores["docs:weak"] < scores["docs:strong"]  # a weak match never passes a strong one

        store.delete_documents(["docs:close"])  # the page changed: its votes no longer count
        store.upsert([Chunk(doc_id="docs:close", index=0, content="edited", title="close", section="", url="",
                            sha="v2")], [[1.0]])
        assert {d.doc_id: d.score for d in ranking.rerank(ranked)}["docs:close"] == 0.97
    finally:
        signals.close()


def _vote(request_id: str, doc_id: str, vote: int) -> LearnedAnswer:
    return LearnedAnswer(request_id=request_id, collection="c", embedding_model="m", vote=vote, cited={doc_id: "v1"},
                         question="q", question_key=request_id, verified=False,
                         sources=[Source(n=1, title=doc_id, url=f"https://docs/{doc_id}", doc_id=doc_id)],
                         graded_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def test_answers_to_similar_questions_vote_for_and_against_what_they_cited(pg_url, collection_name):
    store, signals = FakeVectorStore(), PgLearnedSignals(url=pg_url, table=f"{collection_name}_assoc")
    chunks = {name: Chunk(doc_id=f"docs:{name}", index=0, content=name, title=name, section="", url="", sha="v1")
              for name in ("first", "second", "missed", "elsewhere")}
    store.upsert(list(chunks.values()), [[1.0]] * len(chunks))
    ranked = [RankedDocument(f"docs:{n}", score, [ScoredChunk(chunks[n], score)])
              for n, score in (("first", 1.0), ("second", 0.9))]
    ranking = LearnedRanking(signals=signals, store=store, collection="c", embedding_model="m", prior_weight=0.0,
                             prior_strength=2.0, association_weight=0.5, min_similarity=0.6)
    asked = [1.0, 0.0, 0.0]
    try:
        signals.record([_vote("alike-good", "docs:missed", 1), _vote("alike-bad", "docs:first", -1),
                        _vote("unlike", "docs:elsewhere", 1)],
                       [[0.95, 0.31, 0.0], [0.9, 0.0, 0.44], [0.0, 1.0, 0.0]])
        assert ranking.rerank(ranked) == ranked  # no question: nothing to compare
        order = [d.doc_id for d in in_order(ranking.rerank(ranked, question_vector=asked))]
        # the page a good answer to a similar question cited joins, the one a bad answer cited drops, and what
        # an unlike question's answer cited stays out
        assert order == ["docs:second", "docs:first", "docs:missed"]
        joined = next(d for d in ranking.rerank(ranked, question_vector=asked) if d.doc_id == "docs:missed")
        assert joined.chunks[0].chunk == chunks["missed"]  # as stored, read through the viewer's filter
    finally:
        signals.close()


def test_a_verified_answer_is_served_again_with_no_model_call(loop):
    original = loop.asked("original", QUESTION)
    loop.grade("original")
    before = _chats(loop.wire)
    for asked in (QUESTION, "  how do TASKS pull an xcom value from another task  "):
        served = loop.answerer.answer(asked)
        assert served.mode == "cached" and served.cached_from == "original"
        assert served.text == original.answer  # and its sources as stored (who may read them is never stored)
        assert [s.model_dump() for s in served.sources] == [s.model_dump() for s in original.sources]
        assert served.cache_similarity == 1.0  # the same normalised question
    semantic = loop.answerer.answer("How can a task pull the XCom value of another task?")
    assert semantic.mode == "cached" and 0.8 <= semantic.cache_similarity < 1.0
    assert _chats(loop.wire) == before

    fresh = loop.answerer.answer(QUESTION, fresh=True)
    assert fresh.mode == "llm" and _chats(loop.wire) == before + 2


def test_a_served_answer_rated_down_takes_its_original_out_of_the_cache(loop):
    loop.asked("original", QUESTION)
    loop.grade("original")
    served = loop.asked("served", QUESTION, positive=False)  # the user says the served answer is wrong
    assert served.mode == "cached" and served.cached_from == "original"
    loop.grade("served")
    assert loop.answerer.answer(QUESTION).mode == "llm"


def test_only_verified_current_answers_are_served(loop):
    loop.asked("unrated-bad", QUESTION, positive=False)
    loop.asked("private", "How do tasks pull an XCom value? Ask jane.doe@example.com", positive=True)
    loop.grade("unrated-bad", "private")
    assert loop.answerer.answer(QUESTION).mode == "llm"  # rated down: not verified
    assert loop.answerer.answer("How do tasks pull an XCom value? Ask jane.doe@example.com").mode == "llm"
    loop.asked("pending", "Which cron expression runs a DAG every day?")  # answered, never graded
    assert loop.answerer.answer("Which cron expression runs a DAG every day?").mode == "llm"

    loop.asked("good", "How do I use catchup when scheduling a DAG?")
    loop.grade("good")
    assert loop.answerer.answer("How do I use catchup when scheduling a DAG?").mode == "cached"
    # a near-duplicate that asks the opposite is not served
    assert difference("How do I disable catchup when scheduling a DAG?", "How do I enable catchup when scheduling a "
                      "DAG?") is not None
    assert loop.answerer.answer("Why is catchup not used when scheduling my DAG?").mode == "llm"


def test_editing_a_cited_page_and_reingesting_takes_the_answer_out_of_the_cache(loop, tmp_path):
    loop.asked("original", QUESTION)
    loop.grade("original")
    assert loop.answerer.answer(QUESTION).mode == "cached"
    edited = tmp_path / "docs"
    edited.mkdir()
    for path in DOCS.rglob("*"):
        if path.is_file():
            target = edited / path.relative_to(DOCS)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text() + ("\n\nEdited since.\n" if path.name == "xcoms.rst" else ""))
    result = index_documents(load_paths([edited], source="docs"), store=loop.store, embeddings=loop.minilm,
                             strategy=loop.components.strategy(), source="docs", answers_source="answers")
    assert result.answers_invalidated == 1
    assert loop.answerer.answer(QUESTION).mode == "llm"


def test_eval_feedback_measures_a_round_and_an_empty_round_changes_nothing(pg_url, collection_name, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("ASKFLOW_COLLECTION", collection_name)
    monkeypatch.setenv("ASKFLOW_CACHE_THRESHOLD", "0.8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in [
        {"question": "How do tasks pull an XCom value from another task?", "gold": ["xcoms.rst"]},
        {"question": "How do I stop a DAG from running for every missed interval?", "gold": ["scheduling.md"]},
        {"question": "Where do I keep the password of a database connection?", "gold": ["guides/connections.html"]},
    ]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    def run(feedback: Path) -> dict:
        assert cli.main(["eval", "feedback", "--corpus", str(DOCS), "--feedback", str(feedback), "--questions",
                         str(questions), "--details", str(tmp_path / "details.jsonl")]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    nothing = run(empty)
    assert nothing["feedback"] == 0 and nothing["after"] == nothing["before"]
    assert nothing["cache"]["served"] == 0

    repeats = run(questions)  # everyone asks again: rated answers first, then the same questions
    assert repeats["before"] == nothing["before"]  # every run starts from nothing learned
    assert repeats["verified"] >= 1 and repeats["cache"]["served"] == repeats["verified"]
    assert repeats["cache"]["precision"] == 1.0 and repeats["cache"]["p50_ms"] > 0
    assert repeats["after"]["mrr@10"] >= repeats["before"]["mrr@10"]

    # the answers that round stored never reach `eval retrieval`'s figures, though it shares the collection
    assert cli.main(["eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), "--details",
                     str(tmp_path / "retrieval.jsonl")]) == 0
    retrieval = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {key: retrieval[key] for key in repeats["before"]} == repeats["before"]


def test_eval_feedback_refuses_a_missing_file(tmp_path, capsys):
    assert cli.main(["eval", "feedback", "--corpus", str(DOCS), "--feedback", str(tmp_path / "nope.jsonl"),
                     "--questions", str(tmp_path / "nope.jsonl")]) == 2
    assert "--feedback" in capsys.readouterr().err


def test_an_answer_only_a_heuristic_graded_is_served_once_a_reviewer_approves_it(loop):
    """Before, the heuristic's "good" and a 👍 verified an answer; now it waits in the review queue, and a reviewer's
    approval is what serves it again."""
    loop.asked("liked", QUESTION, positive=True)
    run = loop.grade("liked", grader=HeuristicGrader())
    stored = loop.requests.get("liked")
    assert (run.good, run.verified, run.in_review) == (1, 0, 1) and stored.in_review and not stored.verified
    assert loop.answerer.answer(QUESTION).mode == "llm"
    assert loop.store.document_fingerprints("answers:") == {}

    handlers.review_answer("liked", approved=True, reviewer="rita@example.com", via="admin",
                           requests=loop.requests)
    loop.grade("liked", grader=HeuristicGrader())
    stored = loop.requests.get("liked")
    assert stored.verified and stored.verified_by == "reviewer rita" and not stored.in_review
    served = loop.answerer.answer(QUESTION)
    assert served.mode == "cached" and served.cached_from == "liked"
    assert [e.action for e in loop.requests.audit_log(5)] == ["approved"]

    loop.requests.requests.pop("liked")  # its request is gone (a restart of an in-memory store, a deletion)
    assert loop.answerer.answer(QUESTION).mode == "llm"  # the cache points at no request that does not exist
