"""Does feedback make later answers better? One round of the learning loop, measured on other questions.

1. index the corpus into the evaluation collection, with nothing learned (no stored answers, no learned signals),
   and score the evaluation questions' retrieval ("before");
2. ask every feedback question through the production answer path, rate each answer as its asker would (thumbs up
   when it cites one of the question's gold pages, down otherwise), approve it as a reviewer would when it cites a
   gold page (the trust rules: without a model judge nothing else is verified), and run the production grading and
   write-back on those ratings;
3. score the evaluation questions' retrieval again, with the learned signals in the ranking ("after");
4. ask every evaluation question through the production answer path once more: how many were served from a
   verified answer, how many of those cite a gold page (precision), and how long a cached answer took.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.messages import GradingDue, QuestionQueued
from askflow.domain.model import ASKER_RATER, Document, Request, token_sha
from askflow.evaluation.retrieval_eval import EVAL_SOURCE, keep_only_the_corpus, score_retrieval
from askflow.grading.graders import Grader
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.learning.votes import cited_sources
from askflow.ports import Embeddings, EvaluationRuns, LearnedSignals, RequestStore, VectorStore
from askflow.retrieval.retriever import Retriever
from askflow.service_layer import handlers
from askflow.service_layer.answering import Answerer
from askflow.service_layer.commands import RateAnswer
from askflow.service_layer.evaluation import grade_events

log = logging.getLogger(__name__)


def evaluate_feedback(
    *, documents: Sequence[Document], feedback: Sequence[dict], questions: Sequence[dict], store: VectorStore,
    embeddings: Embeddings, signals: LearnedSignals, retriever: Retriever, answerer: Answerer, grader: Grader,
    strategy: ChunkingStrategy, settings: Settings, collection: str, requests: RequestStore, runs: EvaluationRuns,
    details_path: Path | None = None,
) -> dict:
    """``store`` and ``signals`` are the evaluation's own (emptied here), and so are ``requests`` and ``runs`` (an
    in-memory store: the deployment's records are not touched); ``retriever`` and ``answerer`` are the production
    ones over them."""
    _progress(f"indexing {len(documents)} documents")
    index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=EVAL_SOURCE)
    forget_everything_learned(store, signals)
    _progress(f"before: scoring {len(questions)} questions")
    before = score_retrieval(questions, retriever)

    due, rated_up = [], 0
    for number, row in enumerate(feedback, start=1):
        request = _ask(f"feedback-{number}", row["question"], requests=requests, answerer=answerer,
                       settings=settings)
        if request.revision() is None:
            continue
        cited = {source.doc_id for source in cited_sources(request)}
        liked = bool(cited & {f"{EVAL_SOURCE}:{page}" for page in row["gold"]})
        handlers.rate_answer(request.request_id, RateAnswer(positive=liked), requests=requests, rater=ASKER_RATER)
        if liked:
            handlers.review_answer(request.request_id, approved=True, reviewer="eval reviewer", via="eval",
                                   requests=requests)
        rated_up += liked
        due.append(GradingDue(request_id=request.request_id, revision=requests.get(request.request_id).revision()))
        if number % 10 == 0 or number == len(feedback):
            _progress(f"feedback: {number}/{len(feedback)} asked and rated")
    run = grade_events(due, requests=requests, runs=runs, store=store, embeddings=embeddings,
                       grader=grader, strategy=strategy, answers_source=settings.answers_source,
                       answers_base_url=settings.answer_pages, batch_size=settings.evaluation_batch_size,
                       signals=signals, collection=collection, review_cap=settings.review_queue_per_asker,
                       attempts=settings.grading_attempts)
    _progress(f"graded {run.graded}: {run.good} good, {run.verified} verified, rejected {run.rejected}")

    _progress(f"after: scoring {len(questions)} questions")
    after = score_retrieval(questions, retriever, details_path=details_path)

    served, correct, cached_ms = 0, 0, []
    for number, row in enumerate(questions, start=1):
        started = time.perf_counter()
        answer = answerer.answer(row["question"])
        if answer.mode == "cached":
            cached_ms.append((time.perf_counter() - started) * 1000)
            served += 1
            correct += bool({s.doc_id for s in answer.sources} & {f"{EVAL_SOURCE}:{p}" for p in row["gold"]})
        if number % 10 == 0 or number == len(questions):
            _progress(f"cache: {number}/{len(questions)} asked, {served} served from verified answers")
    return {
        "feedback": len(feedback), "questions": len(questions),
        "feedback_rated_up": rated_up,
        "graded_good": run.good, "verified": run.verified,
        "before": _metrics(before), "after": _metrics(after),
        "cache": {"served": served, "precision": round(correct / served, 4) if served else None,
                  "p50_ms": round(statistics.median(cached_ms), 1) if cached_ms else None},
    }


def forget_everything_learned(store: VectorStore, signals: LearnedSignals) -> None:
    """The learned state's fresh start: nothing but the corpus in the collection, no learned signals."""
    keep_only_the_corpus(store)
    signals.clear()


def _ask(request_id: str, question: str, *, requests: RequestStore, answerer: Answerer,
         settings: Settings) -> Request:
    """The production worker's handler, on a request stored as the API stores one."""
    now = utcnow()
    requests.create(Request(request_id=request_id, question=question, thread_id=request_id, created_at=now,
                            updated_at=now, asker_sha=token_sha(request_id)))  # an asker, who rates it
    handlers.answer_request(QuestionQueued(request_id=request_id), requests=requests, answerer=answerer,
                            settings=settings)
    return requests.get(request_id)


def _metrics(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key != "questions"}


def _progress(message: str) -> None:
    print(f"eval feedback: {message}", file=sys.stderr, flush=True)
