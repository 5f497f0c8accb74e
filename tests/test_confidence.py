"""How sure askflow is: the "not sure" rule (no source matched, or the model says its sources do not cover the
question), the same confidence in the retrieval evaluation's details as in the answerer's answer, and the insights'
weak-match measure reading the stored confidence."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from askflow.domain.model import Chunk, Request, RequestStatus, Source
from askflow.retrieval.confidence import NO_SOURCE, NOT_COVERED, Confidence, assess
from askflow.service_layer.extractive import NOTHING_FOUND

GIVEN = [Source(n=1, title="Pools", url="https://docs/pools", excerpt="Pools limit how many tasks run at once.")]


def _assessed(answer_text: str, *, mode: str = "llm", sources=GIVEN, top_score: float | None = 1.8372):
    return assess(top_score=top_score, sources=sources, answer_text=answer_text, mode=mode,
                  nothing_found=NOTHING_FOUND)


def test_no_source_is_not_sure_and_the_value_is_the_top_documents_fused_score():
    assert _assessed("Anything.", sources=[], top_score=None) == Confidence(0.0, True, NO_SOURCE)
    nothing = _assessed(NOTHING_FOUND, mode="extractive", sources=[])
    assert nothing.not_sure and nothing.reason == NO_SOURCE and nothing.value == 1.8372
    quoted = _assessed("> Pools limit how many tasks run at once. [1]", mode="extractive")
    assert not quoted.not_sure and quoted.reason == "" and quoted.value == 1.8372


@pytest.mark.parametrize("answer", [
    "I do not know.",
    "I don't know: the sources say nothing about Kerberos tickets.",
    "I cannot answer this from the sources given.",
    "I could not find how to do that in the sources.",
    "The provided sources do not contain information about custom timetables.",
    "The sources don't cover running Airflow on Windows.",
    "The documentation provided does not explain how to rotate the Fernet key.",
    "The sources do not directly address retries of sensors.",
    "None of the sources mention the KubernetesExecutor's pod template.",
    "This is not covered in the provided sources.",
    "There is no information about Celery queues in the provided sources.",
])
def test_a_model_saying_its_sources_do_not_cover_the_question_is_not_sure(answer):
    assert _assessed(answer) == Confidence(1.8372, True, NOT_COVERED)


@pytest.mark.parametrize("answer", [
    "Do not set catchup=True if you do not want old runs [1].",
    "The scheduler does not run paused DAGs, and pools are not shared across deployments [1].",
    "Nesting TaskGroups this way is not supported [1]; you cannot know the run id before it starts.",
    "Airflow keeps no information about deleted runs [1].",
    "If the source file does not contain a DAG object, the DAG processor skips it [1].",
])
def test_an_answer_that_merely_contains_not_is_sure(answer):
    assert _assessed(answer) == Confidence(1.8372, False)


def test_only_a_models_answer_is_read_for_its_own_judgement():
    """An extractive answer quotes the docs: a quoted "I do not know" is the docs' words, not askflow's."""
    assert not _assessed("> If I do not know the connection id, ... [1]", mode="extractive").not_sure


def _store_and_retriever():
    from askflow.retrieval.retriever import Retriever
    from tests.fakes import FakeVectorStore, HashEmbeddings

    store, embeddings = FakeVectorStore(), HashEmbeddings()
    texts = {"pools.rst": ["Pools limit how many tasks run at once.", "A pool has a number of slots for tasks."],
             "xcom.rst": ["XComs let tasks push and pull small values."],
             "catchup.rst": ["With catchup off, the scheduler creates no runs for past intervals."]}
    chunks = [Chunk(doc_id=f"eval:{page}", index=i, content=text, title=page.split(".")[0].title(), section="",
                    url=f"https://docs/{page}", sha="v1")
              for page, passages in texts.items() for i, text in enumerate(passages)]
    store.upsert(chunks, embeddings.embed_documents([c.embedding_text for c in chunks]))
    return Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10)


def test_the_retrieval_details_carry_the_answerers_confidence_and_verdict(tmp_path):
    from askflow.evaluation.retrieval_eval import score_retrieval
    from askflow.service_layer.answering import Answerer

    retriever = _store_and_retriever()
    questions = [{"id": "pools", "question": "How do pools limit running tasks?", "gold": ["pools.rst"]},
                 {"id": "nothing", "question": "Zanzibar quokka marmalade?", "gold": ["xcom.rst"]}]
    details = tmp_path / "details.jsonl"
    score_retrieval(questions, retriever, details_path=details)
    rows = {row["id"]: row for row in map(json.loads, details.read_text().splitlines())}

    answerer = Answerer(retriever=retriever, cheap_model=None, strong_model=None, rewordings=0, sources=6)
    for question in questions:
        answer = answerer.answer(question["question"])
        row = rows[question["id"]]
        assert (row["confidence"], row["not_sure"]) == (answer.confidence, answer.not_sure)
    assert rows["pools"]["hit@1"] == 1.0 and rows["pools"]["not_sure"] is None
    assert rows["pools"]["confidence"] > 1.0  # the pools page matched in both its passages
    assert rows["nothing"]["not_sure"] == NO_SOURCE


def _asked(n: int, *, confidence: float | None, excerpt: str):
    from askflow.insights.report import AskedQuestion

    return AskedQuestion(request_id=f"r{n}", question=f"question {n}", private=False,
                         created_at=dt.datetime(2026, 11, 20, tzinfo=dt.UTC), failed=False, dont_know=False,
                         net_rating=0, top_source=excerpt, cited=(), confidence=confidence)


def test_the_insights_weak_match_is_the_stored_confidence_and_older_requests_keep_the_cosine():
    from askflow.insights.report import build_report

    # two topics far apart: the first answered with a stored confidence (two of four below the threshold), the
    # second stored before answers carried one (their top sources orthogonal to their questions: cosine 0)
    stored = [_asked(n, confidence=value, excerpt=f"stored {n}") for n, value in enumerate([1.0, 1.2, 2.0, 3.0])]
    older = [_asked(n, confidence=None, excerpt=f"older {n}") for n in range(4, 8)]
    asked = stored + older
    centre_a, centre_b = np.eye(8)[0], np.eye(8)[1]
    noise = np.random.default_rng(0).normal(scale=0.01, size=(8, 8))
    vectors = np.vstack([centre_a] * 4 + [centre_b] * 4) + noise
    embedded: list[str] = []

    def embed_texts(texts):
        embedded.extend(texts)
        return np.vstack([np.eye(8)[7]] * len(texts))  # orthogonal to both topics

    report = build_report(
        asked, previous=[], start=dt.datetime(2026, 11, 16, tzinfo=dt.UTC), end=dt.datetime(2026, 11, 23,
                                                                                              tzinfo=dt.UTC),
        vectors=lambda questions: vectors[[asked.index(q) for q in questions]], embed_texts=embed_texts,
        closest_pages=lambda label, centre: [], namer=None, embedding_model="test", min_cluster_size=3,
        low_confidence=1.37, low_similarity=0.35, gap_share=0.9, assign_similarity=0.5,
        built_at=dt.datetime(2026, 11, 23, tzinfo=dt.UTC))

    assert sorted(embedded) == [q.top_source for q in older]  # a stored confidence is never recomputed
    assert sorted(c.size for c in report.clusters) == [4, 4]
    (stored_cluster,) = [c for c in report.clusters if set(c.representatives) <= {q.question for q in stored}]
    (older_cluster,) = [c for c in report.clusters if set(c.representatives) <= {q.question for q in older}]
    assert stored_cluster.low_confidence_share == 0.5 and stored_cluster.confidence == pytest.approx(1.8)
    assert older_cluster.low_confidence_share == 1.0 and older_cluster.confidence == pytest.approx(0.0, abs=0.05)
    assert report.low_confidence == 1.37


def test_a_requests_stored_confidence_reaches_the_insights():
    from askflow.insights.report import AskedQuestion

    created = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    request = Request(request_id="r", question="How do pools work?", created_at=created, updated_at=created,
                      status=RequestStatus.COMPLETE, answer="Pools cap tasks [1].", sources=GIVEN, mode="llm",
                      confidence=2.41)
    assert AskedQuestion.of(request).confidence == 2.41
    assert AskedQuestion.of(request.model_copy(update={"confidence": None})).confidence is None
