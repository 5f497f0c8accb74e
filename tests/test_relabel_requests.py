"""Relabelling reaches the answers already given, also when it races: two relabellings at once, a worker finishing
meanwhile, a run retried after the request store failed, feed items answered before lineage was kept, and a team's
answer marked internal (review of issue 24: each of these left an answer public after its page went internal)."""
from __future__ import annotations

import pytest

from askflow.adapters.memory import InMemoryRequestStore
from askflow.config import Settings
from askflow.domain.audiences import PUBLIC, PUBLIC_VIEWER
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import Document
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.ingest.labels import relabel_location
from askflow.retrieval.retriever import Retriever
from askflow.service_layer import handlers
from askflow.service_layer.answering import Answerer
from askflow.service_layer.commands import AskQuestion
from tests.fakes import FakeEventBus, FakeVectorStore, HashEmbeddings


def _store(labels):
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    for doc_id, text, audiences in [("docs:a.md", "The vault rotation passphrase lives in the runbook.", labels[0]),
                                    ("docs:b.md", "The vault rotation passphrase is rotated monthly.", labels[1])]:
        index_documents([Document(doc_id=doc_id, text=text, title=doc_id, url=f"https://docs/{doc_id}")],
                        store=store, embeddings=embeddings, strategy=ChunkingStrategy(), source="docs",
                        audiences=list(audiences), prune=False)
    answerer = Answerer(retriever=Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10),
                        cheap_model=None, strong_model=None, rewordings=0, sources=4)
    return store, answerer


def _ask(requests, answerer, viewer=PUBLIC_VIEWER):
    asked, _ = handlers.submit_question(AskQuestion(question="Where does the vault rotation passphrase live?"),
                                        requests=requests, events=FakeEventBus(), settings=Settings(), viewer=viewer)
    handlers.answer_request(QuestionQueued(request_id=asked.request_id), requests=requests, answerer=answerer,
                            settings=Settings())
    return requests.get(asked.request_id)


def test_two_relabellings_at_once_leave_the_answer_with_the_labels_both_wrote():
    """Relabelling 1 (a.md -> public) reads its labels before relabelling 2 (b.md -> employees) runs whole and
    finds nothing to write; relabelling 1's write then reads its labels again and narrows to b.md's."""
    store, answerer = _store(([PUBLIC], [PUBLIC]))
    requests = InMemoryRequestStore()
    answered = _ask(requests, answerer)
    assert set(answered.cited_docs) == {"docs:a.md", "docs:b.md"} and answered.readers == [PUBLIC]
    # start: a.md internal (the request follows: employees)
    relabel_location(store, prefix="docs:a.md", audiences=["employees"], answers_source="answers", requests=requests)
    assert requests.get(answered.request_id).readers == ["employees"]

    real = requests.relabel
    calls = []

    def interleaved(request_id, labels):
        if not calls:  # relabel 1 read its labels; relabel 2 runs whole before relabel 1 writes
            calls.append(dict(labels))
            relabel_location(store, prefix="docs:b.md", audiences=["employees"], answers_source="answers",
                             requests=requests)
        return real(request_id, labels)

    requests.relabel = interleaved
    relabel_location(store, prefix="docs:a.md", audiences=[PUBLIC], answers_source="answers", requests=requests)
    final = requests.get(answered.request_id)
    assert store.audiences_of(["docs:b.md"]) == {"docs:b.md": ["employees"]}
    assert calls and final.readers == ["employees"] and not final.readable_by(PUBLIC_VIEWER)  # b.md is internal


def test_a_worker_finishing_during_a_relabelling_takes_the_new_labels():
    """A request not yet answered when the relabelling reads ``citing`` is passed by; its worker, once finished,
    finds its documents labelled otherwise than its search did, and its readers follow."""
    store, answerer = _store(([PUBLIC], [PUBLIC]))
    requests = InMemoryRequestStore()
    real_answer = answerer.answer

    def answer_then_relabel(*args, **kwargs):
        answer = real_answer(*args, **kwargs)  # the search ran with both pages public
        relabel_location(store, prefix="docs:", audiences=["employees"], answers_source="answers", requests=requests)
        return answer

    answerer.answer = answer_then_relabel
    answered = _ask(requests, answerer)
    assert store.audiences_of(["docs:a.md"]) == {"docs:a.md": ["employees"]}
    assert answered.readers == ["employees"] and not answered.in_feed


def test_an_ingestion_retried_after_the_request_store_failed_relabels_the_requests():
    """What was derived is relabelled before the chunks: a run whose request store failed (the DAG task fails,
    Airflow retries it) leaves the chunks as they were, so the retry finds them still to do."""
    store, answerer = _store(([PUBLIC], [PUBLIC]))
    requests = InMemoryRequestStore()
    answered = _ask(requests, answerer)
    assert answered.in_feed and answered.readers == [PUBLIC]

    class Down:
        def citing(self, *args, **kwargs):
            raise RuntimeError("Firestore unavailable")

    docs = [Document(doc_id="docs:a.md", text="The vault rotation passphrase lives in the runbook.", title="docs:a.md",
                     url="https://docs/docs:a.md"),
            Document(doc_id="docs:b.md", text="The vault rotation passphrase is rotated monthly.", title="docs:b.md",
                     url="https://docs/docs:b.md")]
    kwargs = dict(store=store, embeddings=HashEmbeddings(), strategy=ChunkingStrategy(), source="docs",
                  audiences=["employees"], prune=False, answers_source="answers")
    with pytest.raises(RuntimeError):
        index_documents(docs, requests=Down, **kwargs)  # the first try: the request store is down
    index_documents(docs, requests=lambda: requests, **kwargs)  # the retry
    assert store.audiences_of(["docs:a.md"]) == {"docs:a.md": ["employees"]}
    final = requests.get(answered.request_id)
    assert final.readers == ["employees"] and not final.in_feed, (final.readers, final.in_feed)


def test_a_feed_item_answered_before_lineage_was_kept_is_relabelled_by_its_sources():
    """Requests stored before lineage have no ``cited_docs``, only sources: the feed's items are checked by them."""
    store, answerer = _store(([PUBLIC], [PUBLIC]))
    requests = InMemoryRequestStore()
    answered = _ask(requests, answerer)
    # as an older deployment stored it, listed in the feed (verified)
    old = answered.model_copy(update={"cited_docs": [], "lineage": None, "verified": True})
    requests.requests[old.request_id] = old
    assert {s.doc_id for s in old.sources} == {"docs:a.md", "docs:b.md"}
    relabel_location(store, prefix="docs:", audiences=["employees"], answers_source="answers", requests=requests)
    final = requests.get(old.request_id)
    assert final.readers == ["employees"] and not final.in_feed, (final.readers, final.in_feed)


def test_a_relabelling_never_lists_a_team_answer_marked_internal():
    """A team's answer marked internal is never listed (``in_feed`` cleared), whatever its documents become."""
    import datetime as dt

    from askflow.domain.model import Escalation, TeamAnswer

    store, answerer = _store(([PUBLIC], [PUBLIC]))
    requests = InMemoryRequestStore()
    answered = _ask(requests, answerer)
    now = dt.datetime.now(dt.UTC)
    team = TeamAnswer(text="internal detail", by="U1", marked_by="U2", at=now, ts="1.1", internal="slack:workspace")
    marked = answered.model_copy(update={"in_feed": False, "escalation": Escalation(
        state="answered", why="asked", asked_at=now, answer=team)})
    requests.requests[marked.request_id] = marked
    relabel_location(store, prefix="docs:", audiences=["employees"], answers_source="answers", requests=requests)
    relabel_location(store, prefix="docs:", audiences=[PUBLIC], answers_source="answers", requests=requests)
    final = requests.get(marked.request_id)
    assert final.team_internal
    assert not final.in_feed
