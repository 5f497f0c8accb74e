"""The evaluation loop's handlers: which writes need grading, grading in batches, good answers as sources, and
what each graded answer teaches (``learning``: its vote on its sources, a verified answer to serve again).

A run is three steps, each idempotent, so a run killed or failed anywhere is made whole by running it again
(Airflow's retry, the next run):
1. ``judge``: grade what is due (a request whose stored ``graded_revision`` already equals its current revision is
   skipped, so duplicate and redelivered events cost nothing), and decide what each answer may be trusted with
   (``learning.trust``: verified, in the review queue, or neither). A request the model judge skipped or mangled gets
   no verdict: its event is returned to be queued again, and after ``attempts`` runs it is saved as ungraded;
2. ``apply_verdicts``: bring the stored answers in line (verified ones indexed as sources under a deterministic id,
   in one indexing call; the others removed, in one delete) and learn each verdict (records upserted by request
   id);
3. ``save_verdicts``: the grades, whose ``graded_revision`` is the idempotency marker, written last. A run that
   died before it grades again and re-applies (indexing the same ids, upserting the same records); one that died
   after it has nothing left to do.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel

from askflow import faults, tracing
from askflow.domain.clock import utcnow
from askflow.domain.cost import PriceTable
from askflow.domain.messages import GradingDue
from askflow.domain.model import Chunk, Document, EvaluationRun, Grade, Graded, Request, SourceKind
from askflow.grading.graders import Grader, verdict
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.learning.cache import question_vector_text
from askflow.learning.trust import trust
from askflow.learning.votes import learned_answer
from askflow.ports import Embeddings, EvaluationRuns, LearnedSignals, RequestStore, VectorStore

log = logging.getLogger(__name__)
REVIEW_QUEUE_SCAN = 500  # open review items read once per run to count each asker's


class Verdict(BaseModel):
    """One request's grade, as judged and not yet saved (what the evaluation DAG's tasks pass on)."""

    request_id: str
    graded: Graded


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
    review_cap: int = 5, attempts: int = 3, requeue: Callable[[Sequence[GradingDue]], None] | None = None,
) -> EvaluationRun:
    """Grade the requests named by ``events`` in batches of ``batch_size``, bring the stored answers in line
    (verified ones indexed as sources, others removed), learn each verdict (``signals``; ``collection``: the
    store's, for answers that did not record theirs), and save the grades last; ``prices`` price the grading calls;
    ``requeue`` queues again the events of answers the judge skipped. Returns the run's summary."""
    run, verdicts, again = judge(events, requests=requests, grader=grader, batch_size=batch_size, prices=prices,
                                 review_cap=review_cap, attempts=attempts)
    faults.kill_point("grading.after_judge")
    apply_verdicts(verdicts, requests=requests, store=store, embeddings=embeddings, strategy=strategy,
                   answers_source=answers_source, answers_base_url=answers_base_url, signals=signals,
                   collection=collection)
    faults.kill_point("grading.after_apply")
    save_verdicts(verdicts, requests=requests)
    faults.kill_point("grading.after_save")
    if again and requeue is not None:
        requeue(again)
    run.finished_at = utcnow()
    runs.save(run)
    log.info("evaluation run %s", run.model_dump(mode="json"))
    return run


def judge(events: Sequence[GradingDue], *, requests: RequestStore, grader: Grader, batch_size: int,
          prices: PriceTable | None = None, review_cap: int = 5,
          attempts: int = 3) -> tuple[EvaluationRun, list[Verdict], list[GradingDue]]:
    """Grade, in batches of ``batch_size``, the requests named by ``events`` that are not graded at their current
    revision, and decide their trust; writes nothing. ``review_cap``: open review-queue items per asker. Returns the
    run's summary so far, the verdicts, and the events to queue again (the judge gave no grade, fewer than
    ``attempts`` tries so far)."""
    prices = prices or PriceTable({})
    run = EvaluationRun(run_id=uuid.uuid4().hex, method=grader.method, events=len(events), started_at=utcnow())
    due: list[tuple[Request, str]] = []
    tries = {}
    for event in events:
        tries[event.request_id] = max(tries.get(event.request_id, 0), event.attempt)
    for request_id in tries:
        request = requests.get(request_id)
        revision = request.revision() if request is not None else None
        if revision is None or request.graded_revision == revision:
            run.skipped += 1
            continue
        due.append((request, revision))
    verdicts: list[Verdict] = []
    again: list[GradingDue] = []
    rejected: Counter[str] = Counter()
    queued = Counter(r.asker_key for r in requests.review_queue(REVIEW_QUEUE_SCAN)) if due else Counter()
    for start in range(0, len(due), batch_size):
        batch = due[start : start + batch_size]
        with tracing.span("grade batch", links=[r.traceparent for r, _ in batch if r.traceparent],
                          attributes={"askflow.requests": len(batch), "askflow.grader": grader.method}):
            grades, usage = grader.grade([request for request, _ in batch])
        run.llm_calls += len(usage)
        run.tokens += sum(u.prompt_tokens + u.completion_tokens for u in usage)
        run.cost_usd = round(run.cost_usd + prices.cost(usage), 6)
        for request, revision in batch:
            grade = grades.get(request.request_id)
            if grade is None:  # the judge skipped or mangled it: graded by a later run, or given up
                tried = tries[request.request_id] + 1
                if tried < attempts:
                    again.append(GradingDue(request_id=request.request_id, revision=revision, attempt=tried))
                    run.ungraded += 1
                    continue
                grade = Grade(helpfulness=1, relevance=1, public=False, method=grader.method,
                              reason=f"ungraded: the judge gave no valid grade in {tried} attempts")
            is_good, reason = verdict(grade, request)
            if grade.reason.startswith("ungraded"):
                is_good, reason = False, grade.reason
            if not request.is_public:  # asked where not everyone may see it, or answered from what not all may read
                grade = grade.model_copy(update={"public": False})
            judged = trust(request, grade, is_good=is_good, reason=reason)
            in_review = judged.in_review and (request.in_review or queued[request.asker_key] < review_cap)
            if in_review and not request.in_review:
                queued[request.asker_key] += 1
            verdicts.append(Verdict(request_id=request.request_id, graded=Graded(
                grade=grade, is_good=is_good, grade_reason=reason, graded_at=utcnow(), graded_revision=revision,
                verified=judged.verified, verified_by=judged.by, in_review=in_review)))
            if not is_good:
                rejected[reason.split(":")[0]] += 1
    run.graded = len(verdicts)
    run.good, run.verified = sum(v.graded.is_good for v in verdicts), sum(v.graded.verified for v in verdicts)
    run.in_review, run.rejected = sum(v.graded.in_review for v in verdicts), dict(rejected)
    return run, verdicts, again


def _current(verdicts: Sequence[Verdict], requests: RequestStore) -> list[tuple[Request, Graded]]:
    """The requests of ``verdicts`` as stored now, with their verdicts; one that changed since it was judged (a new
    rating: its revision moved) is left to the grading its own event brings."""
    current = []
    for item in verdicts:
        request = requests.get(item.request_id)
        if request is not None and request.revision() == item.graded.graded_revision:
            current.append((request, item.graded))
    return current


def apply_verdicts(verdicts: Sequence[Verdict], *, requests: RequestStore, store: VectorStore,
                   embeddings: Embeddings, strategy: ChunkingStrategy, answers_source: str, answers_base_url: str,
                   signals: LearnedSignals | None = None, collection: str = "") -> None:
    """Bring the stored answers in line with ``verdicts`` and learn each; idempotent, so running it again after a
    failure anywhere in it (or in what follows) repeats nothing."""
    judged = _current(verdicts, requests)
    if not judged:
        return
    store.ensure_collection(embeddings.dimension)  # a fresh deploy: the collection may not exist yet
    # what every graded answer cited, as stored now: one lookup for the write-back and the learning alike
    current = store.fingerprints(sorted({s.doc_id for request, _ in judged for s in request.sources if s.doc_id}))
    _write_back([request for request, graded in judged if graded.verified],
                [request for request, graded in judged if not graded.verified], store=store,
                embeddings=embeddings, strategy=strategy, answers_source=answers_source,
                answers_base_url=answers_base_url, fingerprints=current)
    faults.kill_point("grading.after_write_back")
    if signals is not None:
        _learn(judged, signals=signals, embeddings=embeddings, collection=collection, fingerprints=current)
    _undo_deleted([request for request, _ in judged], requests=requests, store=store, signals=signals,
                  answers_source=answers_source)


def _undo_deleted(written: Sequence[Request], *, requests: RequestStore, store: VectorStore,
                  signals: LearnedSignals | None, answers_source: str) -> None:
    """A request deleted (``askflow delete-request``) while this run wrote what it derived: its stored answer and
    learned record are removed again. The deletion removes them after deleting the request; this reads the request
    after writing them: whichever comes last removes what the other left."""
    gone = [r.request_id for r in written if requests.get(r.request_id) is None]
    if not gone:
        return
    store.delete_documents([answer_doc_id(request_id, answers_source) for request_id in gone])
    if signals is not None:
        signals.forget(gone)
    log.info("requests deleted while graded: %s; what this run wrote of them is removed", gone)


def save_verdicts(verdicts: Sequence[Verdict], *, requests: RequestStore) -> int:
    """Write the grades (the marker that the request is graded at its revision), each only on a request still at the
    revision it judged; the last step. Returns how many were written."""
    return sum(bool(requests.save_grade(item.request_id, item.graded)) for item in verdicts)


def answer_doc_id(request_id: str, answers_source: str) -> str:
    return f"{answers_source}:{request_id}"


def _write_back(good: Sequence[Request], rejected: Sequence[Request], *, store: VectorStore, embeddings: Embeddings,
                strategy: ChunkingStrategy, answers_source: str, answers_base_url: str,
                fingerprints: Mapping[str, str]) -> None:
    """Verified answers become sources of kind "answered question" (``stored_answer``); the others leave the
    store (an answer verified once and turned down since, say)."""
    store.delete_documents([answer_doc_id(r.request_id, answers_source) for r in rejected])
    if not good:
        return
    stored = {}  # the stored answers they cite, by their first chunk (it carries its document's metadata)
    for doc_id in sorted({s.doc_id for r in good for s in r.sources if s.kind == SourceKind.ANSWERED_QUESTION.value}):
        chunks = store.document_chunks(doc_id, audiences=None)
        if chunks:
            stored[doc_id] = chunks[0]
    documents = [stored_answer(request, answers_source=answers_source, answers_base_url=answers_base_url,
                               fingerprints=fingerprints, stored_answers=stored) for request in good]
    index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=answers_source,
                    prune=False, own_audiences=True)


def stored_answer(request: Request, *, answers_source: str, answers_base_url: str, fingerprints: Mapping[str, str],
                  stored_answers: Mapping[str, Chunk] = {}) -> Document:  # noqa: B006 (read only)
    """One verified answer as a source: its answer text alone (citation marks and quote marks taken out: its
    numbers name another answer's sources), titled by what it rests on, never by the asker's words (the question
    is kept in its metadata, for matching only, and never reaches a prompt). It is linked to the fingerprints of
    the original documents it cited (re-ingesting a changed one voids it); an answer that cited a stored answer
    is linked to that answer's originals, so no answer is stored as an answer about an answer."""
    team = request.team_answer is not None  # a person's answer: resting on no source, read where it was asked
    cited = [] if team else [s for s in request.sources if s.cited] or list(request.sources)
    originals: dict[str, str] = {}
    for source in cited:
        earlier = stored_answers.get(source.doc_id) if source.kind == SourceKind.ANSWERED_QUESTION.value else None
        if earlier is not None:
            originals |= earlier.metadata.get("cited", {})
        elif source.doc_id in fingerprints:
            originals[source.doc_id] = fingerprints[source.doc_id]
    pages = [s.title for s in cited if s.kind != SourceKind.ANSWERED_QUESTION.value]
    earlier_titles = [stored_answers[s.doc_id].title for s in cited if s.doc_id in stored_answers]
    title = f"Verified answer on {pages[0]}" if pages else earlier_titles[0] if earlier_titles else \
        "The team's answer" if team else "Verified answer"
    return Document(
        doc_id=answer_doc_id(request.request_id, answers_source),
        text=answer_source_text(request.served_answer or ""),
        title=title[:150],
        url=f"{answers_base_url.rstrip('/')}/{request.request_id}",
        kind=SourceKind.ANSWERED_QUESTION,
        # who may read every source it drew on and its place (a person's answer: its place, or its internal audience)
        audiences=tuple((request.team_readers if team else request.readers) or ()),
        metadata={"format": "text", "place": request.place_readers, "question": request.stored_question,
                  "verified_by": request.verified_by or "", "cited": originals,
                  "cited_urls": [s.url for s in cited if s.kind != SourceKind.ANSWERED_QUESTION.value]},
    )


def answer_source_text(answer: str) -> str:
    """An answer's text as a source: no ``[n]`` (its numbers are its own answer's), no quote marks (an extractive
    answer quotes; quoted again it would nest)."""
    text = re.sub(r"\s*\[\d+\]", "", answer)
    return "\n".join(re.sub(r"^\s*(?:>\s?)+", "", line) for line in text.splitlines()).strip()


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
