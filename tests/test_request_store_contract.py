"""One contract for every ``RequestStore``: the Firestore adapter on the emulator and the in-memory one keep the same
rules for claims, leases, heartbeats, progress, outcomes and stale attempts (the fake may refuse nothing the real
adapter accepts, and accept nothing it refuses)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from askflow.domain.clock import utcnow
from askflow.domain.errors import Duplicate
from askflow.domain.model import Approval, Grade, Graded, Request, RequestStatus, SlackThread, Source


@pytest.fixture(params=["firestore", "memory"])
def stores(request):
    """A factory of stores over the same records: each call is another worker instance (its own client, its own
    memory of its claims)."""
    if request.param == "memory":
        from askflow.adapters.memory import InMemoryRequestStore

        shared = InMemoryRequestStore()
        return lambda: shared
    request.getfixturevalue("local_stack")
    from google.cloud import firestore

    from askflow.adapters.firestore_requests import FirestoreRequestStore

    collection = f"contract_{uuid.uuid4().hex[:8]}"
    return lambda: FirestoreRequestStore(client=firestore.Client(project="askflow-test"), collection=collection,
                                         progress_collection="progress", audit_collection=f"{collection}_audit")


def _pending(store, *, slack: SlackThread | None = None) -> str:
    request_id = uuid.uuid4().hex
    now = utcnow()
    store.create(Request(request_id=request_id, question="q?", created_at=now, updated_at=now, slack=slack))
    return request_id


def test_create_refuses_a_taken_id(stores):
    store = stores()
    request_id = _pending(store)
    with pytest.raises(Duplicate):
        store.create(Request(request_id=request_id, question="again?", created_at=utcnow()))
    assert store.get(request_id).question == "q?"
    assert store.get("no-such-request") is None


def test_a_live_lease_blocks_a_claim_and_an_expired_one_does_not(stores):
    store = stores()
    request_id = _pending(store)
    assert store.claim(request_id, lease_s=60).attempts == 1
    assert store.claim(request_id, lease_s=60) is None
    assert store.claim(request_id, lease_s=0).attempts == 2
    assert store.claim("no-such-request", lease_s=0) is None


def test_concurrent_claims_let_exactly_one_worker_in(stores):
    store = stores()
    request_id = _pending(store)
    workers = [stores() for _ in range(6)]
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        claims = list(pool.map(lambda worker: worker.claim(request_id, lease_s=60), workers))
    assert sum(claim is not None for claim in claims) == 1
    assert store.get(request_id).attempts == 1


def test_heartbeats_extend_the_lease_of_the_claim_that_holds_and_of_no_other(stores):
    a, b = stores(), stores()
    request_id = _pending(a)
    first = a.claim(request_id, lease_s=60)
    beat = utcnow()
    assert a.heartbeat(first, at=beat)
    assert a.get(request_id).heartbeat_at == beat
    second = b.claim(request_id, lease_s=0)
    assert not a.heartbeat(first, at=utcnow())  # superseded: refused, and the lease is the new claim's
    assert a.get(request_id).heartbeat_at == beat
    assert b.heartbeat(second, at=utcnow())


def test_a_superseded_worker_cannot_overwrite_the_answer_of_the_one_that_took_over(stores):
    """The review's case: A claims, B takes the expired lease over and completes; A's late heartbeat, progress and
    final write ("failed: internal error") all write nothing."""
    a, b = stores(), stores()
    request_id = _pending(a)
    first = a.claim(request_id, lease_s=60)
    assert a.heartbeat(first, at=utcnow())  # A is alive for a while, and its fast path is warm
    second = b.claim(request_id, lease_s=0)
    assert b.finish(second.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "from B"}))
    assert not a.heartbeat(first, at=utcnow())
    assert not a.progress(first.answering("late words from A", []))
    assert not a.reply_started(first.model_copy(update={"slack": SlackThread(channel="C", ts="1.1",
                                                                             thread_ts="1.1", reply_ts="9.9")}))
    assert not a.finish(first.failed("internal error"))
    stored = a.get(request_id)
    assert (stored.status, stored.answer, stored.error, stored.slack) == (RequestStatus.COMPLETE, "from B", None, None)


def test_a_stale_attempt_cannot_finish_even_before_the_new_one_does(stores):
    a, b = stores(), stores()
    request_id = _pending(a)
    first = a.claim(request_id, lease_s=60)
    b.claim(request_id, lease_s=0)
    assert not a.finish(first.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "from A"}))
    assert a.get(request_id).status is RequestStatus.ANSWERING


def test_a_terminal_state_is_never_overwritten_nor_claimed(stores):
    store = stores()
    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    assert store.finish(claimed.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "first"}))
    assert not store.finish(claimed.failed("late"))
    assert not store.finish(store.get(request_id).failed("timed out"))  # read after it ended
    assert store.claim(request_id, lease_s=0) is None
    assert not store.heartbeat(claimed, at=utcnow())
    assert store.get(request_id).answer == "first"


def test_a_request_never_claimed_can_be_failed_by_whoever_read_it(stores):
    """The deadline and a failed publish fail a pending request with the attempt they read (0)."""
    store = stores()
    request_id = _pending(store)
    assert store.finish(store.get(request_id).failed("timed out"))
    assert store.get(request_id).status is RequestStatus.FAILED


def test_progress_is_shown_while_its_attempt_answers_and_gone_with_the_next(stores):
    a, b = stores(), stores()
    request_id = _pending(a)
    first = a.claim(request_id, lease_s=60)
    source = Source(n=1, title="Pools", url="https://example.org/pools")
    assert a.progress(first.answering("Pools limit", [source]))
    shown = b.get(request_id)
    assert (shown.partial_answer, shown.sources) == ("Pools limit", [source])
    second = b.claim(request_id, lease_s=0)
    retried = a.get(request_id)
    assert (retried.partial_answer, retried.sources) == (None, [])  # the new attempt starts from nothing
    assert b.progress(second.answering("Pools limit concurrency", []))
    assert b.finish(second.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "Pools limit [1].",
                                              "sources": [source], "partial_answer": None}))
    done = a.get(request_id)
    assert (done.answer, done.partial_answer, done.sources) == ("Pools limit [1].", None, [source])


def test_the_slack_reply_is_kept_for_the_next_attempt(stores):
    a, b = stores(), stores()
    thread = SlackThread(channel="C1", ts="1.1", thread_ts="1.1")
    request_id = _pending(a, slack=thread)
    first = a.claim(request_id, lease_s=60)
    assert a.reply_started(first.replied_in_slack("2.2"))
    second = b.claim(request_id, lease_s=0)
    assert second.slack.reply_ts == "2.2"


def test_delivery_is_noted(stores):
    store = stores()
    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    store.finish(claimed.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "a"}))
    assert store.get(request_id).delivered_at is None
    at = utcnow()
    store.delivered(request_id, at=at)
    assert store.get(request_id).delivered_at == at


def test_racing_outcomes_of_one_attempt_and_a_takeover_leave_one_answer(stores):
    """Threads at once: the holder finishing, a takeover claiming and finishing, the superseded worker beating; in
    the end one outcome stands, and it is that of the writer whose write landed."""
    for _ in range(5):
        _race_once(stores)


def _race_once(stores) -> None:
    store = stores()
    request_id = _pending(store)
    first = stores().claim(request_id, lease_s=60)
    barrier = threading.Barrier(3)
    results: dict[str, object] = {}

    def take_over():
        barrier.wait()
        worker = stores()
        second = worker.claim(request_id, lease_s=0)
        if second is not None:
            results["second"] = worker.finish(
                second.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "second"}))

    def finish_first():
        barrier.wait()
        results["first"] = store.finish(first.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "first"}))

    def beat_first():
        barrier.wait()
        store.heartbeat(first, at=utcnow())

    threads = [threading.Thread(target=f) for f in (take_over, finish_first, beat_first)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    stored = store.get(request_id)
    assert stored.status is RequestStatus.COMPLETE
    assert [name for name in ("first", "second") if results.get(name)] == [stored.answer]  # one write landed


def test_unfinished_lists_what_is_not_terminal_oldest_first(stores):
    store = stores()
    before = utcnow() + dt.timedelta(seconds=1)
    waiting = _pending(store)
    done = _pending(store)
    store.finish(store.get(done).failed("timed out"))
    found = [r.request_id for r in store.unfinished(updated_before=before, limit=1000)]
    assert waiting in found and done not in found


def test_firestore_progress_leaves_the_request_document_unwritten(local_stack):
    """The answer so far goes to a subdocument outside the grading trigger's ``{collection}/{id}`` pattern: the
    request document's update time does not move, so a streamed answer fires no trigger per partial write."""
    from google.cloud import firestore

    from askflow.adapters.firestore_requests import FirestoreRequestStore

    client = firestore.Client(project="askflow-test")
    store = FirestoreRequestStore(client=client, collection=f"contract_{uuid.uuid4().hex[:8]}")
    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    document = client.collection(store._collection).document(request_id)
    before = document.get().update_time
    for n in range(5):
        assert store.progress(claimed.answering("word " * n, []))
    assert document.get().update_time == before
    assert store.get(request_id).partial_answer == "word " * 4


def test_a_decision_lands_on_an_answer_once_with_its_audit_entry_and_the_lists_filter_in_their_queries(stores):
    store = stores()
    pending = _pending(store)
    decision = Approval(by="rita@example.com", at=utcnow(), via="admin")
    assert store.approve(pending, decision).approval is None  # not answered: nothing to decide on
    assert store.approve("no-such-request", decision) is None
    assert store.audit_log(10) == []

    answered = []
    for number in range(3):
        request_id = _pending(store)
        claimed = store.claim(request_id, lease_s=60)
        store.finish(claimed.model_copy(update={"status": RequestStatus.COMPLETE, "answer": f"answer {number}",
                                                "in_feed": True}))
        answered.append(request_id)
    assert store.approve(answered[0], decision).approval == decision
    store.approve(answered[0], decision)  # the same decision written again (a retry): one entry
    assert store.get(answered[0]).approval == decision
    assert [(e.request_id, e.action, e.by) for e in store.audit_log(10)] == [
        (answered[0], "approved", "rita@example.com")]

    grade = Grade(helpfulness=5, relevance=5, public=True)
    for request_id, verified, in_review in ((answered[0], True, False), (answered[1], False, True),
                                            (answered[2], False, True)):
        stale = Graded(grade=grade, is_good=True, grade_reason="good", graded_at=utcnow(), graded_revision="older",
                       verified=verified, in_review=in_review)
        assert store.save_grade(request_id, stale) is False  # judged at another revision: nothing written
        assert store.save_grade(request_id, stale.model_copy(
            update={"graded_revision": store.get(request_id).revision()})) is True
    assert [r.request_id for r in store.review_queue(10)] == [answered[2], answered[1]]  # newest first
    assert [r.request_id for r in store.recent_good(10)] == [answered[0]]  # graded good is not enough: verified


def _answered(store, doc_ids: list[str], *, cached_from: str | None = None, lineage=None) -> Request:
    """A request answered from ``doc_ids`` (each a source whose passage came from a traced chunk), finished."""
    from askflow.domain.model import Answer, SourceOrigin

    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    sources = [Source(n=n, title=doc_id, url=f"https://example.org/{doc_id}", doc_id=doc_id, cited=n == 1,
                      origin=SourceOrigin(chunk_id=f"chunk-{n}", sha=f"sha-{doc_id}", location="/docs",
                                          version=f"commit {n}", ingested_at=dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
                                          run="cli:run-1"))
               for n, doc_id in enumerate(doc_ids, start=1)]
    answer = Answer(text="Use XComs [1].", sources=sources, mode="extractive", queries=["q?"], usage=[],
                    timings_ms={"total_ms": 1.0}, cached_from=cached_from, lineage=lineage)
    assert store.finish(claimed.completed(answer, at=utcnow()))
    return store.get(request_id)


def test_an_answers_lineage_is_kept_and_found_by_the_documents_it_cited_and_a_request_is_deleted(stores):
    from askflow.service_layer.handlers import public_view

    store = stores()
    doc = f"docs:{uuid.uuid4().hex[:8]}.md"
    first = _answered(store, [doc, "docs:other.md"])
    assert [(s.doc_id, s.sha, s.version, s.run, s.cited) for s in first.lineage.sources] == [
        (doc, f"sha-{doc}", "commit 1", "cli:run-1", True), ("docs:other.md", "sha-docs:other.md", "commit 2",
                                                             "cli:run-1", False)]
    assert first.lineage.sources[0].ingested_at == dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    assert first.cited_docs == sorted([doc, "docs:other.md"]) and first.lineage.origin is None
    assert "lineage" not in public_view(first) and "cited_docs" not in public_view(first)
    assert "origin" not in public_view(first)["sources"][0]

    served = _answered(store, [doc], cached_from=first.request_id, lineage=first.lineage)  # a cache hit
    assert served.lineage.origin == first.request_id and served.lineage.served_at is not None
    assert served.lineage.sources == first.lineage.sources  # the original's sources, as they were
    elsewhere = _answered(store, ["docs:unrelated.md"])
    assert [r.request_id for r in store.citing(doc)] == [served.request_id, first.request_id]  # newest first
    assert elsewhere.request_id not in {r.request_id for r in store.citing("docs:other.md")}
    assert store.citing("docs:never-cited.md") == []

    assert store.delete(first.request_id)
    assert store.get(first.request_id) is None
    assert [r.request_id for r in store.citing(doc)] == [served.request_id]
    assert not store.delete(first.request_id)  # gone already: nothing to remove, no error


def test_the_requests_served_an_answer_from_the_cache_are_found_by_it(stores):
    """``cached_copies``: the requests whose ``cached_from`` names the request (what deleting it deletes with it),
    and no other."""
    store = stores()
    doc = f"docs:{uuid.uuid4().hex[:8]}.md"
    first, other = _answered(store, [doc]), _answered(store, [doc])
    served = _answered(store, [doc], cached_from=first.request_id, lineage=first.lineage)
    assert [r.request_id for r in store.cached_copies(first.request_id)] == [served.request_id]
    assert store.cached_copies(other.request_id) == [] and store.cached_copies(served.request_id) == []


def test_a_relabelled_request_gets_its_readers_and_its_place_in_the_feed_and_an_unfinished_one_nothing(stores):
    from askflow.domain.audiences import PUBLIC_VIEWER
    from askflow.domain.model import Answer

    store = stores()
    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    source = Source(n=1, title="A", url="https://example.org/a", doc_id="docs:a.md", audiences=["public"])
    answer = Answer(text="A [1].", sources=[source], mode="extractive", queries=["q?"], usage=[], timings_ms={})
    assert store.finish(claimed.completed(answer, at=utcnow()))
    assert store.get(request_id).in_feed
    internal_labels = {"docs:a.md": ["employees"]}
    assert store.relabel(request_id, internal_labels)
    internal = store.get(request_id)
    assert internal.readers == ["employees"] and not internal.in_feed and not internal.readable_by(PUBLIC_VIEWER)
    assert not store.relabel(request_id, internal_labels)  # the same readers: nothing written
    assert store.relabel(request_id, {"docs:a.md": ["public"]}) and store.get(request_id).in_feed
    unfinished = _pending(store)
    assert not store.relabel(unfinished, internal_labels) and store.get(unfinished).readers is None
    assert not store.relabel("no-such-request", internal_labels)


def test_a_team_answer_is_marked_internal_once_and_leaves_the_feed(stores):
    from askflow.domain.model import Escalation, TeamAnswer

    store = stores()
    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    store.finish(claimed.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "a", "in_feed": True}))
    assert store.mark_team_answer_internal(request_id, "2.0", "employees").team_answer is None  # no answer yet
    assert store.escalate(request_id, Escalation(state="open", why="w", asked_at=utcnow(), thread="C/1.0"))
    store.answer_escalation(request_id, TeamAnswer(text="t", by="slack:U", marked_by="slack:R", at=utcnow(), ts="2.0"))
    assert store.mark_team_answer_internal(request_id, "3.0", "employees").team_answer.internal is None  # not it
    marked = store.mark_team_answer_internal(request_id, "2.0", "employees")
    assert marked.team_answer.internal == "employees" and not marked.in_feed
    assert store.mark_team_answer_internal(request_id, "2.0", "other").team_answer.internal == "employees"  # once
    stored = store.get(request_id)
    assert stored.team_answer.internal == "employees" and not stored.in_feed and stored.team_answer.text == "t"
    assert store.mark_team_answer_internal("no-such-request", "2.0", "employees") is None


def test_only_a_skip_that_may_pass_is_replaced_and_only_by_whoever_read_it(stores):
    from askflow.domain.model import Escalation

    store = stores()
    request_id = _pending(store)
    claimed = store.claim(request_id, lease_s=60)
    store.finish(claimed.model_copy(update={"status": RequestStatus.COMPLETE, "answer": "a"}))
    skipped = Escalation(state="skipped", why="w", asked_at=utcnow(), why_not="over budget: total")
    assert store.escalate(request_id, skipped)
    assert not store.escalate(request_id, skipped.model_copy(update={"state": "posting"}))  # one is set
    other = skipped.model_copy(update={"asked_at": skipped.asked_at - dt.timedelta(seconds=1)})
    assert not store.escalate(request_id, other.model_copy(update={"state": "posting"}), replacing=other)
    posting = skipped.model_copy(update={"state": "posting", "asked_at": utcnow()})
    assert store.escalate(request_id, posting, replacing=skipped)  # the skip it read: retried
    assert not store.escalate(request_id, posting, replacing=skipped)  # a racing retry of the same skip: refused
    assert store.get(request_id).escalation.state == "posting"

    stays = _pending(store)
    store.finish(store.claim(stays, lease_s=60).model_copy(update={"status": RequestStatus.COMPLETE, "answer": "a"}))
    audience = skipped.model_copy(update={"why_not": Escalation.MAY_NOT_READ})
    assert store.escalate(stays, audience)
    assert not store.escalate(stays, posting, replacing=audience)  # the audience rule's skip stays
    assert store.get(stays).escalation.why_not == Escalation.MAY_NOT_READ
