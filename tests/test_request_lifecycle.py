"""Request state transitions on the Firestore emulator: claims, leases, terminal states, deadlines."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import firestore

from askflow.adapters.firestore_requests import FirestoreRequestStore
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.errors import ModelUnavailable, NotFound
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import Request, RequestStatus
from askflow.service_layer import handlers


@pytest.fixture
def requests(local_stack) -> FirestoreRequestStore:
    return FirestoreRequestStore(client=firestore.Client(project="askflow-test"), collection="lifecycle")


def _pending(requests, *, age_s: float = 0) -> str:
    request_id = uuid.uuid4().hex
    requests.create(Request(request_id=request_id, question="q?", created_at=utcnow() - dt.timedelta(seconds=age_s)))
    return request_id


def _finished(requests, request_id: str, **outcome) -> Request:
    """The request as a worker would write it when done."""
    return requests.get(request_id).model_copy(update=outcome)


class ExplodingAnswerer:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def answer(self, question, history=(), *, fresh=False, on_partial=None, viewer=None):
        self.calls += 1
        raise self.error


def test_a_live_lease_blocks_a_second_claim_and_an_expired_one_does_not(requests):
    request_id = _pending(requests)
    assert requests.claim(request_id, lease_s=60).attempts == 1
    assert requests.claim(request_id, lease_s=60) is None
    assert requests.claim(request_id, lease_s=0).attempts == 2


def _worker_store() -> FirestoreRequestStore:
    """What another worker instance has: its own client and its own memory of its claims."""
    return FirestoreRequestStore(client=firestore.Client(project="askflow-test"), collection="lifecycle")


def test_concurrent_claims_from_several_workers_let_exactly_one_answer(requests):
    request_id = _pending(requests)
    workers = [_worker_store() for _ in range(6)]
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        claims = list(pool.map(lambda worker: worker.claim(request_id, lease_s=60), workers))
    assert sum(claim is not None for claim in claims) == 1
    assert requests.get(request_id).attempts == 1


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_answer_of_the_one_that_took_over(requests):
    request_id = _pending(requests)
    slow, fast = _worker_store(), _worker_store()
    assert slow.claim(request_id, lease_s=60).attempts == 1
    assert fast.claim(request_id, lease_s=0).attempts == 2  # the lease expired: another worker takes over
    done = RequestStatus.COMPLETE
    assert fast.finish(_finished(requests, request_id, status=done, answer="from the second worker"))
    assert not slow.finish(_finished(requests, request_id, status=done, answer="from the first worker"))
    assert requests.get(request_id).answer == "from the second worker"


def test_terminal_state_is_never_overwritten(requests):
    request_id = _pending(requests)
    assert requests.finish(_finished(requests, request_id, status=RequestStatus.COMPLETE, answer="first"))
    assert not requests.finish(_finished(requests, request_id, status=RequestStatus.FAILED, error="late"))
    assert requests.claim(request_id, lease_s=0) is None
    assert requests.get(request_id).answer == "first"


def test_model_failure_ends_in_failed_with_the_reason(requests):
    request_id = _pending(requests)
    answerer = ExplodingAnswerer(ModelUnavailable("model endpoint failed 4 times: RateLimitError"))
    outcome = handlers.answer_request(QuestionQueued(request_id=request_id), requests=requests, answerer=answerer,
                                      settings=Settings())
    assert outcome == RequestStatus.FAILED
    assert requests.get(request_id).error.startswith("model endpoint failed")


def test_unexpected_error_still_ends_in_failed_without_details(requests):
    request_id = _pending(requests)
    answerer = ExplodingAnswerer(KeyError("secret internals"))
    assert handlers.answer_request(QuestionQueued(request_id=request_id), requests=requests, answerer=answerer,
                                   settings=Settings()) == RequestStatus.FAILED
    assert requests.get(request_id).error == "internal error"


def test_a_request_past_its_deadline_is_failed_when_read(requests):
    settings = Settings(request_deadline_s=30)
    stale = _pending(requests, age_s=120)
    fresh = _pending(requests)
    assert handlers.get_request(stale, requests=requests, settings=settings).status is RequestStatus.FAILED
    assert requests.get(stale).error == "timed out"
    assert handlers.get_request(fresh, requests=requests, settings=settings).status is RequestStatus.PENDING
    with pytest.raises(NotFound):
        handlers.get_request("missing", requests=requests, settings=settings)


def test_malformed_question_messages_are_dropped_not_retried(requests):
    from cloudevents.http import CloudEvent

    from askflow.entrypoints.events import on_question

    event = CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub/test"},
                       {"message": {"data": "bm90IGpzb24="}})
    assert on_question(event, components=None) == "dropped"
