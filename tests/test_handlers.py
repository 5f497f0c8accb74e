"""The service layer on fakes of its ports: the ask path's handlers, the requeue sweep, ratings, and the grading
loop. Fast (no emulator, no model); the emulator-backed suite checks the same paths through the real adapters."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from askflow.adapters.memory import InMemoryBudgets
from askflow.config import Settings
from askflow.domain.budgets import BudgetLimits
from askflow.domain.clock import utcnow
from askflow.domain.errors import AskflowError, Conflict, Duplicate, Forbidden, InvalidInput, ModelUnavailable, NotFound
from askflow.domain.messages import GradingDue, QuestionQueued
from askflow.domain.model import Answer, Approval, Rating, Request, RequestStatus, SlackThread, Source, Usage
from askflow.grading.graders import HeuristicGrader
from askflow.ingest.chunking import ChunkingStrategy
from askflow.service_layer import handlers
from askflow.service_layer.commands import AskQuestion, RateAnswer
from askflow.service_layer.evaluation import grade_events, grading_due
from tests.fakes import FakeEventBus, FakeVectorStore, HashEmbeddings, InMemoryEvaluationRuns, InMemoryRequestStore

SETTINGS = Settings(request_lease_s=60, request_deadline_s=900, requeue_after_s=120)


class CannedAnswerer:
    """Answers every question the same way, or raises what it is given; counts its calls."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.questions: list[tuple[str, list]] = []

    def labels_of(self, doc_ids):  # who may read its sources now: as they were found (no relabelling meanwhile)
        return {}

    def answer(self, question, history=(), *, fresh=False, on_partial=None, viewer=None):
        self.questions.append((question, list(history)))
        if self.error is not None:
            raise self.error
        source = Source(n=1, title="XComs", url="https://docs/xcoms", doc_id="docs:xcoms.rst",
                        excerpt="Tasks pull XComs with xcom_pull.")
        return Answer(text="Use xcom_pull [1].", sources=[source], mode="llm", queries=[question],
                      usage=[Usage("strong", 10, 5)], timings_ms={"total_ms": 1.0})


TOKEN = "browser-token-0123456789abcdef"


def _ask(requests, events, question="How do tasks pull XComs?", token=TOKEN, **command) -> Request:
    return handlers.submit_question(AskQuestion(question=question, **command), requests=requests, events=events,
                                    settings=SETTINGS, asker_token=token)[0]


def test_a_question_is_stored_pending_and_queued_once():
    requests, events = InMemoryRequestStore(), FakeEventBus()
    request = _ask(requests, events, "  How do tasks pull XComs?  ")
    stored = requests.get(request.request_id)
    assert stored.status is RequestStatus.PENDING and stored.question == "How do tasks pull XComs?"
    assert stored.thread_id == request.request_id  # a new conversation
    assert events.published == [(SETTINGS.questions_topic, QuestionQueued(request_id=request.request_id))]


def test_a_delivery_whose_request_exists_is_a_duplicate_whatever_the_budget():
    requests, events = InMemoryRequestStore(), FakeEventBus()
    budgets = InMemoryBudgets(BudgetLimits(questions_per_asker=1, usd_per_asker=0.01))
    thread = SlackThread(channel="C1", ts="1700000000.000100", thread_ts="1700000000.000100", user="U1")

    def deliver():
        return handlers.submit_question(AskQuestion(question="How do tasks pull XComs?"), requests=requests,
                                        events=events, settings=SETTINGS, request_id="slack-Ev-1", slack=thread,
                                        budgets=budgets)[0]

    request = deliver()
    budgets.spend(request.budget_identities, 1.0, at=request.created_at)  # its answer spent the asker's dollars
    with pytest.raises(Duplicate):  # Slack's retry: neither refused (both limits are reached) nor counted
        deliver()
    assert budgets.spent[(budgets.limits.window(request.created_at)[0], "slack:U1")].questions == 1
    assert events.published == [(SETTINGS.questions_topic, QuestionQueued(request_id="slack-Ev-1"))]


@pytest.mark.parametrize(("question", "message"), [(" \n ", "blank"), ("x" * 4001, "at most 4000")])
def test_bad_questions_are_refused_and_nothing_is_queued(question, message):
    requests, events = InMemoryRequestStore(), FakeEventBus()
    with pytest.raises(InvalidInput, match=message):
        _ask(requests, events, question)
    assert requests.requests == {} and events.published == []


def test_a_question_the_queue_refuses_ends_failed_not_pending():
    requests = InMemoryRequestStore()
    with pytest.raises(AskflowError, match="could not queue"):
        _ask(requests, FakeEventBus(failing=True))
    (stored,) = requests.requests.values()
    assert stored.status is RequestStatus.FAILED and stored.error == "could not queue the question"


def test_a_queued_question_is_answered_once_however_often_it_is_delivered():
    requests, events, answerer = InMemoryRequestStore(), FakeEventBus(), CannedAnswerer()
    request = _ask(requests, events)
    published = utcnow()
    message = QuestionQueued(request_id=request.request_id, published_at=published)
    assert handlers.answer_request(message, requests=requests, answerer=answerer, settings=SETTINGS) == "complete"
    assert handlers.answer_request(message, requests=requests, answerer=answerer, settings=SETTINGS) == "skipped"
    stored = requests.get(request.request_id)
    assert len(answerer.questions) == 1 and stored.attempts == 1
    assert stored.answer == "Use xcom_pull [1]." and stored.sources[0].doc_id == "docs:xcoms.rst"
    assert stored.models == ["strong"] and stored.tokens.prompt == 10 and stored.tokens.completion == 5
    assert stored.published_at == published <= stored.received_at <= stored.completed_at


@pytest.mark.parametrize(("error", "reason"), [
    (ModelUnavailable("model endpoint failed 4 times: RateLimitError"), "model endpoint failed 4 times"),
    (KeyError("secret internals"), "internal error"),
])
def test_a_failing_answer_ends_failed_with_a_reason_that_leaks_nothing(error, reason):
    requests, events = InMemoryRequestStore(), FakeEventBus()
    request = _ask(requests, events)
    outcome = handlers.answer_request(QuestionQueued(request_id=request.request_id), requests=requests,
                                      answerer=CannedAnswerer(error), settings=SETTINGS)
    assert outcome == RequestStatus.FAILED
    assert requests.get(request.request_id).error.startswith(reason)
    assert "secret internals" not in requests.get(request.request_id).error


def test_a_follow_up_in_a_web_thread_carries_the_earlier_turns():
    requests, events, answerer = InMemoryRequestStore(), FakeEventBus(), CannedAnswerer()
    first = _ask(requests, events, "How do tasks pull XComs?")
    handlers.answer_request(QuestionQueued(request_id=first.request_id), requests=requests, answerer=answerer,
                            settings=SETTINGS)
    follow_up = _ask(requests, events, "And in Airflow 3?", thread_id=first.request_id)
    handlers.answer_request(QuestionQueued(request_id=follow_up.request_id), requests=requests, answerer=answerer,
                            settings=SETTINGS)
    assert answerer.questions[1] == ("And in Airflow 3?", [("How do tasks pull XComs?", "Use xcom_pull [1].")])


def test_a_worker_beats_while_it_answers_and_a_redelivery_waits_for_a_live_lease_not_a_dead_one():
    import threading
    import time

    from askflow.domain.errors import LeaseHeld

    settings = SETTINGS.model_copy(update={"request_lease_s": 0.6})  # a heartbeat every 0.2 s
    requests, events = InMemoryRequestStore(), FakeEventBus()
    request = _ask(requests, events)
    started, release = threading.Event(), threading.Event()

    class SlowAnswerer(CannedAnswerer):
        def answer(self, question, history=(), *, fresh=False, on_partial=None, viewer=None):
            started.set()
            release.wait(5)
            return super().answer(question, history, fresh=fresh)

    message = QuestionQueued(request_id=request.request_id)
    first = threading.Thread(target=handlers.answer_request, kwargs={
        "message": message, "requests": requests, "answerer": SlowAnswerer(), "settings": settings})
    first.start()
    started.wait(5)
    time.sleep(1.0)  # longer than the lease: only the heartbeats keep it
    beat = requests.get(request.request_id).heartbeat_at
    assert beat is not None and (utcnow() - beat).total_seconds() < 0.6
    with pytest.raises(LeaseHeld):  # a live worker holds it: back to the queue, not acknowledged and lost
        handlers.answer_request(message, requests=requests, answerer=CannedAnswerer(), settings=settings)
    release.set()
    first.join(5)
    assert requests.get(request.request_id).status is RequestStatus.COMPLETE
    assert handlers.answer_request(message, requests=requests, answerer=CannedAnswerer(), settings=settings) \
        == "skipped"

    dead = _ask(requests, events, "A question whose worker died?")  # claimed, then silent past the lease
    silent = utcnow() - dt.timedelta(seconds=1)
    requests.requests[dead.request_id] = requests.get(dead.request_id).model_copy(update={
        "status": RequestStatus.ANSWERING, "claimed_at": silent, "heartbeat_at": silent, "attempts": 1})
    assert handlers.answer_request(QuestionQueued(request_id=dead.request_id), requests=requests,
                                   answerer=CannedAnswerer(), settings=settings) == "complete"
    assert requests.get(dead.request_id).attempts == 2


def test_a_thread_is_continued_only_by_whoever_started_it():
    requests, events = InMemoryRequestStore(), FakeEventBus()
    first = _ask(requests, events, "How do tasks pull XComs?")
    for stranger in ("someone-elses-token-0123456789", None):
        with pytest.raises(NotFound, match="no thread"):
            _ask(requests, events, "And what did they ask before?", token=stranger, thread_id=first.request_id)
    with pytest.raises(NotFound, match="no thread"):
        _ask(requests, events, "A thread that never was?", thread_id="never-started")
    assert len(events.published) == 1  # nothing of the refused follow-ups was queued
    with pytest.raises(InvalidInput, match="asker token"):
        _ask(requests, events, "Short token?", token="short")
    new, token = handlers.submit_question(AskQuestion(question="No token?"), requests=requests, events=events,
                                          settings=SETTINGS)
    assert len(token) >= 22 and new.asked_by(token) and not new.asked_by(TOKEN)


def test_the_requeue_sweep_queues_the_stale_fails_the_late_and_leaves_live_leases():
    requests, events = InMemoryRequestStore(), FakeEventBus()
    now = utcnow()

    def stored(request_id: str, age_s: float, **fields) -> None:
        at = now - dt.timedelta(seconds=age_s)
        requests.create(Request(request_id=request_id, question="q?", created_at=at, updated_at=at, **fields))

    stored("lost", 300)
    stored("late", 1000)
    stored("busy", 300, status=RequestStatus.ANSWERING, claimed_at=now - dt.timedelta(seconds=10))
    stored("fresh", 5)
    summary = handlers.requeue_unfinished(requests=requests, events=events, settings=SETTINGS)
    assert summary == {"requeued": 1, "timed_out": 1, "still_answering": 1}
    assert events.published == [(SETTINGS.questions_topic, QuestionQueued(request_id="lost"))]
    assert requests.get("late").status is RequestStatus.FAILED and requests.get("late").error == "timed out"
    again = handlers.requeue_unfinished(requests=requests, events=events, settings=SETTINGS)
    assert again["requeued"] == 0  # the requeued one waits its turn again


def test_ratings_wait_for_the_answer_and_only_the_asker_rates_once():
    requests, events = InMemoryRequestStore(), FakeEventBus()
    request = _ask(requests, events)
    with pytest.raises(Conflict, match="only answered requests"):
        handlers.rate_as_asker(request.request_id, RateAnswer(positive=True), requests=requests, asker_token=TOKEN)
    with pytest.raises(NotFound):
        handlers.rate_as_asker("nope", RateAnswer(positive=True), requests=requests, asker_token=TOKEN)
    handlers.answer_request(QuestionQueued(request_id=request.request_id), requests=requests,
                            answerer=CannedAnswerer(), settings=SETTINGS)
    for _ in range(20):  # a flood of made-up raters: refused, one and all
        with pytest.raises(Forbidden):
            handlers.rate_as_asker(request.request_id, RateAnswer(positive=False), requests=requests,
                                   asker_token=f"made-up-{uuid.uuid4().hex}")
    handlers.rate_as_asker(request.request_id, RateAnswer(positive=True), requests=requests, asker_token=TOKEN)
    handlers.rate_as_asker(request.request_id, RateAnswer(positive=False, comment="no example"), requests=requests,
                           asker_token=TOKEN)
    ratings = requests.get(request.request_id).ratings
    assert set(ratings) == {"asker"} and ratings["asker"].positive is False
    assert ratings["asker"].comment == "no example" and requests.get(request.request_id).net_rating == -1


def _complete(request_id: str, question: str, answer: str, **fields) -> Request:
    source = Source(n=1, title="Pools", url="https://docs/pools", doc_id="docs:pools.rst",
                    excerpt="Pools limit how many tasks run at once.")
    return Request(request_id=request_id, question=question, answer=answer, status=RequestStatus.COMPLETE,
                   sources=[source], created_at=utcnow(), grounded=True, **fields)


def _approved() -> Approval:
    return Approval(by="ana@example.com", at=utcnow(), via="admin")


def test_grading_is_due_when_the_answer_or_its_ratings_change_and_not_for_grade_writes():
    pending = Request(request_id="r", question="q?", created_at=utcnow())
    done = _complete("r", "How do pools work?", "Pools limit slots [1].")
    assert grading_due(None, pending) is None
    due = grading_due(pending, done)
    assert due is not None and due.request_id == "r"
    rated = done.model_copy(update={"ratings": {"ana": Rating(positive=True, at=utcnow())}})
    assert grading_due(done, rated).revision != due.revision
    graded = rated.model_copy(update={"is_good": True, "graded_revision": rated.revision()})
    assert grading_due(rated, graded) is None


def test_a_grading_run_grades_once_keeps_good_answers_and_never_stores_private_ones():
    requests, runs = InMemoryRequestStore(), InMemoryEvaluationRuns()
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    requests.create(_complete("good-1", "How do pools limit concurrency?", "Pools limit running tasks [1].",
                              approval=_approved()))
    requests.create(_complete("good-2", "What is a pool slot?", "A slot is one running task in a pool [1].",
                              approval=_approved()))
    requests.create(_complete("unconfirmed", "What is a pool?", "A pool limits running tasks [1]."))
    requests.create(_complete("leaky", "My password=hunter2secret fails, why?", "Check the pool [1].",
                              approval=_approved()))
    requests.create(_complete("down", "How do pools work?", "Pools limit tasks [1].", asker_sha="x" * 64,
                              ratings={"asker": Rating(positive=False, at=utcnow())}))
    store.upsert(*_cited_page(embeddings))
    events = [GradingDue(request_id=r, revision="seen")
              for r in ("good-1", "good-2", "unconfirmed", "leaky", "down")] * 2

    def grade():
        return grade_events(events, requests=requests, runs=runs, store=store, embeddings=embeddings,
                            grader=HeuristicGrader(), strategy=ChunkingStrategy(), answers_source="answers",
                            answers_base_url="/requests", batch_size=3)

    calls_before = embeddings.calls
    run = grade()
    assert (run.graded, run.good, run.verified, run.skipped, run.method) == (5, 3, 2, 0, "heuristic")
    assert run.rejected == {"private": 1, "rated down": 1}
    assert requests.get("leaky").is_good is False and requests.get("leaky").grade_reason.startswith("private")
    assert requests.get("leaky").verified is False  # a reviewer's approval never publishes private data
    # graded good by the heuristic, approved by no one: not verified, not written back
    assert requests.get("unconfirmed").is_good and not requests.get("unconfirmed").verified
    assert requests.get("good-1").verified_by == "reviewer ana"
    assert set(store.document_fingerprints("answers:")) == {"answers:good-1", "answers:good-2"}
    assert embeddings.calls - calls_before == 1  # both good answers embedded in one indexing call
    stored = store.document_metadata("answers:good-1")["answers:good-1"]
    assert stored["cited"] == {"docs:pools.rst": "page-v1"}
    assert runs.runs == [run]

    again = grade()  # every event delivered again: nothing graded twice
    assert (again.graded, again.skipped) == (0, 5) and embeddings.calls - calls_before == 1


def _cited_page(embeddings):
    from askflow.domain.model import Chunk

    chunk = Chunk(doc_id="docs:pools.rst", index=0, content="Pools limit how many tasks run at once.",
                  title="Pools", section="", url="https://docs/pools", sha="page-v1")
    return [chunk], embeddings.embed_documents([chunk.embedding_text])


class FailingOnceStore(FakeVectorStore):
    """A vector store whose first write fails, as a Postgres restart or a Weaviate time-out would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def upsert(self, chunks, vectors):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the vector store went away")
        return super().upsert(chunks, vectors)


def test_a_grading_run_retried_after_the_store_failed_still_writes_back_and_learns():
    """The grades are the run's last write: a run whose write-back failed leaves them unsaved, so its retry does
    what the failed run did not (before, the retry found the requests graded and skipped them)."""
    class Signals:
        def __init__(self) -> None:
            self.records: dict[str, object] = {}

        def record(self, answers, vectors):
            self.records.update({a.request_id: a for a in answers})

        def forget(self, request_ids):
            return 0

    requests, runs, signals = InMemoryRequestStore(), InMemoryEvaluationRuns(), Signals()
    store, embeddings = FailingOnceStore(), HashEmbeddings()
    store.failures = 0
    store.upsert(*_cited_page(embeddings))
    store.failures = 1
    requests.create(_complete("good-1", "How do pools limit concurrency?", "Pools limit running tasks [1].",
                              approval=_approved()))
    events = [GradingDue(request_id="good-1", revision="seen")]

    def grade():
        return grade_events(events, requests=requests, runs=runs, store=store, embeddings=embeddings,
                            grader=HeuristicGrader(), strategy=ChunkingStrategy(), answers_source="answers",
                            answers_base_url="/requests", batch_size=3, signals=signals, collection="c")

    with pytest.raises(ConnectionError):
        grade()
    assert requests.get("good-1").graded_revision is None  # nothing marks it graded ...
    assert signals.records == {}
    retried = grade()  # ... so Airflow's retry grades it again and writes it back
    assert retried.graded == 1
    assert set(store.document_fingerprints("answers:")) == {"answers:good-1"}
    assert set(signals.records) == {"good-1"}
    assert requests.get("good-1").graded_revision == requests.get("good-1").revision()
    assert grade().skipped == 1  # and once saved, never again


class PostingSlack:
    """A Slack side whose reply could not be started (no message to edit), posting each final answer anew; its
    ``during_post`` runs inside the first post, as a redelivery arriving then would."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        self.during_post = None

    def thread_history(self, channel, thread_ts, *, before_ts):
        return []

    def start_reply(self, request):
        return None

    def edit_reply(self, request, text):
        pass

    def post_answer(self, request):
        self.posts.append(request.status.value)
        if self.during_post is not None:
            during, self.during_post = self.during_post, None
            during()


def _slack_request(requests, *, age_s: float = 0):
    from askflow.domain.model import SlackThread

    created = utcnow() - dt.timedelta(seconds=age_s)
    request = Request(request_id=f"slack-{uuid.uuid4().hex}", question="How do pools work?", created_at=created,
                      updated_at=created, slack=SlackThread(channel="C1", ts="1.1", thread_ts="1.1", user="U1"))
    requests.create(request)
    return request


def test_a_redelivery_while_the_answer_is_delivered_posts_nothing_more():
    from askflow.domain.errors import LeaseHeld

    requests, slack = InMemoryRequestStore(), PostingSlack()
    request = _slack_request(requests)
    message = QuestionQueued(request_id=request.request_id)
    seen = []

    def redelivered():
        with pytest.raises(LeaseHeld):  # the delivery is another worker's: back to the queue, not a second post
            handlers.answer_request(message, requests=requests, answerer=CannedAnswerer(), settings=SETTINGS,
                                    slack=slack)
        seen.append("refused")

    slack.during_post = redelivered
    assert handlers.answer_request(message, requests=requests, answerer=CannedAnswerer(), settings=SETTINGS,
                                   slack=slack) == "complete"
    assert slack.posts == ["complete"] and seen == ["refused"]
    assert handlers.answer_request(message, requests=requests, answerer=CannedAnswerer(), settings=SETTINGS,
                                   slack=slack) == "skipped"
    assert slack.posts == ["complete"]


def test_a_slack_question_timed_out_under_its_worker_still_gets_its_reply():
    requests, slack, events = InMemoryRequestStore(), PostingSlack(), FakeEventBus()
    settings = SETTINGS.model_copy(update={"request_deadline_s": 30, "requeue_after_s": 0})
    request = _slack_request(requests, age_s=120)

    class SweptMeanwhile(CannedAnswerer):
        def answer(self, question, history=(), *, fresh=False, on_partial=None, viewer=None):
            handlers.requeue_unfinished(requests=requests, events=events, settings=settings)
            return super().answer(question, history, fresh=fresh)

    assert handlers.answer_request(QuestionQueued(request_id=request.request_id), requests=requests,
                                   answerer=SweptMeanwhile(), settings=settings, slack=slack) == "skipped"
    stored = requests.get(request.request_id)
    assert stored.error == "timed out" and stored.delivered_at is not None
    assert slack.posts == ["failed"]  # the thread is told, once


def test_a_request_is_stored_with_the_time_its_retention_ends():
    requests = InMemoryRequestStore()
    settings = SETTINGS.model_copy(update={"request_retention_days": 30})
    queued, _ = handlers.submit_question(AskQuestion(question="How do pools work?"), requests=requests,
                                         events=FakeEventBus(), settings=settings)
    stored = requests.get(queued.request_id)
    assert (stored.expires_at - stored.created_at).days == 30
