"""The evaluation loop's handlers: which writes need grading, grading in batches, good answers as sources, and
what each graded answer teaches (``learning``: its vote on its sources, a verified answer to serve again).

Duplicates never cause duplicate work: an event names a request and the *revision* it saw (its answer and
ratings); a request whose stored ``graded_revision`` already equals its current revision is skipped, and the
answer written to the vector store has a deterministic id. A run writes back in bulk: one indexing call for all
its good answers, one delete for all its rejected ones.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence

from askflow import tracing
from askflow.domain.clock import utcnow
from askflow.domain.cost import PriceTable
from askflow.domain.messages import GradingDue
from askflow.domain.model import Document, EvaluationRun, Graded, Request, SourceKind
from askflow.grading.graders import Grader, verdict
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.learning.cache import question_vector_text
from askflow.learning.votes import learned_answer
from askflow.ports import Embeddings, EvaluationRuns, LearnedSignals, RequestStore, VectorStore

log = logging.getLogger(__name__)


def grading_due(old: Request | None, new: Request | None) -> GradingDue | None:
    """The event to publish for a write of a request, or ``None`` (grade writes included: they change no
    revision)."""
    revision = new.revision() if new is not None else None
    if revision is None or revision == (old.revision() if old is not None else None):
        return None
    return GradingDue(request_id=new.request_id, revision=revision)


def grade_events(
    events: Sequence[GradingDue], *, requests: RequestStore, runs: EvaluationRuns, store: VectorStore,
    embeddings: Embeddings, grader: Grader, strategy: ChunkingStrategy, answers_source: str, answers_base_url: str,
    batch_size: int, signals: LearnedSignals | None = None, collection: str = "", prices: PriceTable | None = None,
) -> EvaluationRun:
    """Grade the requests named by ``events`` in batches of ``batch_size``, write the verdicts, and bring the stored
    answers in line: good ones indexed as sources, rejected ones removed; ``signals`` learn each graded answer
    (``collection``: the store's, for answers that did not record theirs); ``prices`` price the grading calls.
    Returns the run's summary."""
    prices = prices or PriceTable({})
    run = EvaluationRun(run_id=uuid.uuid4().hex, method=grader.method, events=len(events), started_at=utcnow())
    due: list[tuple[Request, str]] = []
    for request_id in dict.fromkeys(event.request_id for event in events):
        request = requests.get(request_id)
        revision = request.revision() if request is not None else None
        if revision is None or request.graded_revision == revision:
            run.skipped += 1
            continue
        due.append((request, revision))
    good: list[Request] = []
    judged: list[tuple[Request, Graded]] = []
    rejected: Counter[str] = Counter()
    for start in range(0, len(due), batch_size):
        batch = due[start : start + batch_size]
        with tracing.span("grade batch", links=[r.traceparent for r, _ in batch if r.traceparent],
                          attributes={"askflow.requests": len(batch), "askflow.grader": grader.method}):
            grades, usage = grader.grade([request for request, _ in batch])
        run.llm_calls += len(usage)
        run.tokens += sum(u.prompt_tokens + u.completion_tokens for u in usage)
        run.cost_usd = round(run.cost_usd + prices.cost(usage), 6)
        for request, revision in batch:
            grade = grades[request.request_id]
            is_good, reason = verdict(grade, request)
            graded = Graded(grade=grade, is_good=is_good, grade_reason=reason, graded_at=utcnow(),
                            graded_revision=revision)
            requests.save_grade(request.request_id, graded)
            judged.append((request, graded))
            if is_good:
                good.append(request)
            else:
                rejected[reason.split(":")[0]] += 1
    run.graded, run.good, run.rejected = len(due), len(good), dict(rejected)
    if due:
        store.ensure_collection(embeddings.dimension)  # a fresh deploy: the collection may not exist yet
        # what every graded answer cited, as stored now: one lookup for the write-back and the learning alike
        current = store.fingerprints(sorted({s.doc_id for request, _ in judged for s in request.sources if s.doc_id}))
        kept = {request.request_id for request in good}
        _write_back([request for request in good if request.cached_from is None],
                    [request for request, _ in due if request.request_id not in kept], store=store,
                    embeddings=embeddings, strategy=strategy, answers_source=answers_source,
                    answers_base_url=answers_base_url, fingerprints=current)
        if signals is not None:
            _learn(judged, signals=signals, embeddings=embeddings, collection=collection, fingerprints=current)
    run.finished_at = utcnow()
    runs.save(run)
    log.info("evaluation run %s", run.model_dump(mode="json"))
    return run


def answer_doc_id(request_id: str, answers_source: str) -> str:
    return f"{answers_source}:{request_id}"


def _write_back(good: Sequence[Request], rejected: Sequence[Request], *, store: VectorStore, embeddings: Embeddings,
                strategy: ChunkingStrategy, answers_source: str, answers_base_url: str,
                fingerprints: Mapping[str, str]) -> None:
    """Good public answers become sources of kind "answered question", linked to the fingerprints of what they
    cited (re-ingesting a changed source invalidates them); rejected ones leave the store."""
    store.delete_documents([answer_doc_id(r.request_id, answers_source) for r in rejected])
    if not good:
        return
    documents = [
        Document(
            doc_id=answer_doc_id(request.request_id, answers_source),
            text=f"Question: {request.question}\n\nAnswer: {request.answer}",
            title=request.question.strip().splitlines()[0][:150],
            url=f"{answers_base_url.rstrip('/')}/{request.request_id}",
            kind=SourceKind.ANSWERED_QUESTION,
            metadata={"format": "text", "cited": {s.doc_id: fingerprints[s.doc_id] for s in request.sources
                                                  if s.doc_id in fingerprints},
                      "cited_urls": [s.url for s in request.sources]},
        )
        for request in good
    ]
    index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=answers_source,
                    prune=False)


def _learn(judged: Sequence[tuple[Request, Graded]], *, signals: LearnedSignals, embeddings: Embeddings,
           collection: str, fingerprints: Mapping[str, str]) -> None:
    """One record per graded request, replacing its earlier one (grading again after a new rating changes the
    vote, never adds a second), with its question's embedding when it voted (the cache and the associations
    find records by question). A cached answer rated down takes the answer it was served from out of the cache."""
    learned = [learned_answer(request, graded, fingerprints=fingerprints, collection=collection,
                              embedding_model=embeddings.name) for request, graded in judged]
    voted = [answer for answer in learned if answer.vote]
    vectors = dict(zip([a.request_id for a in voted],
                       embeddings.embed_documents([question_vector_text(a.question) for a in voted]),
                       strict=True)) if voted else {}
    signals.record(learned, [vectors.get(answer.request_id) for answer in learned])
    refuted = [request.cached_from for request, _ in judged if request.cached_from and request.net_rating < 0]
    if refuted:
        signals.forget(refuted)
        log.info("served answers rated down: %s leave the cache", refuted)
