"""Lineage: from an answer back to the source versions it drew on, from a document forward to the answers it shaped,
and the deletion of one request with everything derived from it.

An answer's lineage (``Request.lineage``) is written with it: each source as the store held it then (its chunk, its
document's fingerprint, location, version, ingestion time and run). ``request_lineage`` compares each with what the
vector store holds now: *current* when the document's fingerprint is the one cited, *no longer current* when it is
another (a re-ingested change replaced it, whatever its version string says: an edited Slack reply keeps its
``latest_reply``; and, as for the cache, another embedding model), *gone* when it was pruned. ``document_lineage`` finds
the requests that cited a document (``RequestStore.citing``) and says which are verified and which verified answers a
change voided (the cache serves an answer only while every document it cited is as it was). ``delete_request`` removes a
request's stored answer (the answered-question document), its learned record (the verified-answer cache entry and its
vote: one record), and the request itself, last, so that a deletion stopped half-way is run again to its end; its feed
item is the request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from askflow.domain.errors import InvalidInput, NotFound
from askflow.domain.model import CitedVersion, Request, valid_request_id
from askflow.ports import LearnedSignals, RequestStore, VectorStore
from askflow.service_layer.evaluation import answer_doc_id

CURRENT, CHANGED, GONE, UNKNOWN = "current", "no longer current", "gone", "unknown"


class StoredVersion(BaseModel):
    """What the vector store holds of a document now: its fingerprint and its first chunk's provenance."""

    sha: str
    location: str = ""
    version: str = ""
    ingested_at: dt.datetime | None = None
    run: str = ""


class SourceLineage(CitedVersion):
    """A source of an answer as it was cited, and whether it is still what the store holds (``state``)."""

    state: str
    now: StoredVersion | None = None


class TeamAnswerLineage(BaseModel):
    """A person's answer (an escalation's): it rests on no source; ``request_id``: the request it was given on (a
    joined request's is the one it joined)."""

    request_id: str
    by: str
    marked_by: str
    at: dt.datetime


class RequestLineage(BaseModel):
    request_id: str
    question: str
    status: str
    mode: str | None = None
    answered_at: dt.datetime | None = None
    origin: str | None = None  # a cached answer: the request whose verified answer (and sources) it served
    served_at: dt.datetime | None = None
    verified: bool = False
    verified_by: str | None = None
    team_answer: TeamAnswerLineage | None = None
    recorded: bool = True  # False: answered before lineage was kept (or not answered): no sources known
    sources: list[SourceLineage] = []

    @property
    def current(self) -> bool:
        return all(source.state == CURRENT for source in self.sources)


class CitingRequest(BaseModel):
    """A request that drew on the document: how (``cited``, or only given to the model), which version, whether it is
    verified and whether that verification still holds (``voided``: the document changed since)."""

    request_id: str
    question: str
    created_at: dt.datetime
    mode: str | None = None
    origin: str | None = None
    cited: bool
    version: str = ""
    run: str = ""
    state: str
    verified: bool
    voided: bool


class DocumentLineage(BaseModel):
    doc_id: str
    now: StoredVersion | None = None  # None: not stored (pruned, or never indexed)
    requests: list[CitingRequest] = []


class Deletion(BaseModel):
    """What ``delete_request`` removed; ``nothing_left``: it found nothing (deleted before, or never there)."""

    request_id: str
    stored_answer_chunks: int = 0
    learned_records: int = 0
    cache_entry: bool = False  # the learned record was a verified answer the cache served
    feed_item: bool = False  # the request was listed in the feed
    request: bool = False
    cached_copies: list[str] = []  # the requests the cache served its answer to (deleted with it)

    @property
    def nothing_left(self) -> bool:
        return not (self.stored_answer_chunks or self.learned_records or self.request or self.cached_copies)


def stored_versions(doc_ids: Sequence[str], *, store: VectorStore) -> dict[str, StoredVersion]:
    """``doc_id -> StoredVersion`` for those of ``doc_ids`` the store holds (a fingerprint lookup, then one read of
    each stored document's chunks for its provenance)."""
    fingerprints = store.fingerprints(sorted(set(doc_ids)))
    found: dict[str, StoredVersion] = {}
    for doc_id, sha in fingerprints.items():
        chunks = store.document_chunks(doc_id, audiences=None)
        provenance = chunks[0].provenance if chunks else None
        found[doc_id] = StoredVersion(sha=sha, **({} if provenance is None else {
            "location": provenance.location, "version": provenance.version, "ingested_at": provenance.ingested_at,
            "run": provenance.run}))
    return found


def state_of(cited: CitedVersion, now: StoredVersion | None) -> str:
    """Decided on the fingerprint alone, as the cache decides (``learning.votes.still_valid``): a version string may
    stay the same across a change of content (an edited Slack reply, a page re-served with its old ETag)."""
    if now is None:
        return GONE
    if not cited.sha:
        return UNKNOWN  # recorded without its fingerprint (a cached answer of a request stored before lineage)
    if cited.sha == now.sha:
        return CURRENT
    return CHANGED


def _request(request_id: str, requests: RequestStore) -> Request:
    if not valid_request_id(request_id):
        raise InvalidInput(f"{request_id!r} is not a request id")
    request = requests.get(request_id)
    if request is None:
        raise NotFound(f"no request {request_id}")
    return request


def request_lineage(request_id: str, *, requests: RequestStore, store: VectorStore) -> RequestLineage:
    """Where the answer to ``request_id`` came from, each source compared with what ``store`` holds now;
    ``NotFound`` for an unknown request."""
    request = _request(request_id, requests)
    lineage = request.lineage
    sources = lineage.sources if lineage is not None else []
    now = stored_versions([s.doc_id for s in sources], store=store)
    team, on = request.team_answer, request.request_id
    if team is None and request.escalation is not None and request.escalation.joined:
        joined = requests.get(request.escalation.joined)
        team, on = (joined.team_answer, joined.request_id) if joined is not None else (None, on)
    if team is None and lineage is not None and lineage.origin:  # served from a team's verified answer
        original = requests.get(lineage.origin)
        team, on = (original.team_answer, original.request_id) if original is not None else (None, on)
    return RequestLineage(
        request_id=request.request_id, question=request.question, status=request.status.value, mode=request.mode,
        answered_at=lineage.answered_at if lineage else request.completed_at, origin=lineage.origin if lineage else
        request.cached_from, served_at=lineage.served_at if lineage else None, verified=request.verified,
        verified_by=request.verified_by, recorded=lineage is not None,
        team_answer=TeamAnswerLineage(request_id=on, by=team.by, marked_by=team.marked_by, at=team.at)
        if team is not None else None,
        sources=[SourceLineage(**s.model_dump(), state=state_of(s, now.get(s.doc_id)), now=now.get(s.doc_id))
                 for s in sources])


MAX_DOC_ID_BYTES = 1500  # Firestore compares no indexed value past 1,500 bytes (the array-contains query's)


def _check_doc_id(doc_id: str) -> None:
    """A document id the stores can be asked about: SOURCE:PATH, text (no NUL, which Postgres refuses in text; no
    lone surrogate, which is no UTF-8), at most ``MAX_DOC_ID_BYTES``; anything else is ``InvalidInput`` (a 400, an
    ``askflow: ...`` error), never a store's error."""
    try:
        size = len(doc_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{doc_id!r} is not a document id (not valid text)") from None
    if "\x00" in doc_id:
        raise InvalidInput(f"{doc_id!r} is not a document id (a NUL character)")
    if size > MAX_DOC_ID_BYTES:
        raise InvalidInput(f"a document id is at most {MAX_DOC_ID_BYTES} bytes ({size} given)")
    if ":" not in doc_id:
        raise InvalidInput(f"{doc_id!r} is not a document id (SOURCE:PATH, as `askflow lineage REQUEST_ID` names them)")


def document_lineage(doc_id: str, *, requests: RequestStore, store: VectorStore,
                     limit: int = 500) -> DocumentLineage:
    """The requests whose answers drew on ``doc_id`` (newest first), and what became of them; ``NotFound`` when the
    document is neither stored nor cited."""
    _check_doc_id(doc_id)
    now = stored_versions([doc_id], store=store).get(doc_id)
    citing = requests.citing(doc_id, limit=limit)
    if now is None and not citing:
        raise NotFound(f"no document {doc_id} is stored, and no answer cited it")
    found = []
    for request in citing:
        sources = [s for s in (request.lineage.sources if request.lineage else []) if s.doc_id == doc_id]
        if not sources:
            continue
        cited = next((s for s in sources if s.cited), sources[0])
        state = state_of(cited, now)
        found.append(CitingRequest(
            request_id=request.request_id, question=request.question, created_at=request.created_at,
            mode=request.mode, origin=request.lineage.origin, cited=cited.cited, version=cited.version, run=cited.run,
            state=state, verified=request.verified, voided=request.verified and state in (CHANGED, GONE)))
    return DocumentLineage(doc_id=doc_id, now=now, requests=found)


def delete_request(request_id: str, *, requests: RequestStore, stores: Sequence[VectorStore],
                   signals: LearnedSignals | None, answers_source: str,
                   store_for: Callable[[str], VectorStore | None] | None = None) -> Deletion:
    """Delete ``request_id`` and what was derived from it: its stored answer in each of ``stores`` (the serving
    collection) and in the collection it was answered from (``store_for(Request.collection)``, when that is
    another), its learned record (``signals``: its vote, and the verified answer the cache served), then the request
    (its feed item with it), then the derived items once more: a grading run that read the request before it was
    deleted may have written them back in between (one writing after this reads the request again and undoes its
    writes: ``evaluation.apply_verdicts``). The requests the cache served its answer to
    (``RequestStore.cached_copies``, and theirs in turn) are copies of it, deleted the same way first. Each step
    removes what is there and nothing else, so the same call again finds nothing left, and one that stopped half-way
    finishes (the copies are found by their ``cached_from``, which outlives the original)."""
    if not valid_request_id(request_id):
        raise InvalidInput(f"{request_id!r} is not a request id")
    deletion = Deletion(request_id=request_id)
    order, seen, todo = [], {request_id}, [request_id]
    while todo:  # the request, its cached copies, theirs: deleted copies first, the request last
        current = todo.pop()
        order.append(current)
        for copy in requests.cached_copies(current):
            if copy.request_id not in seen:
                seen.add(copy.request_id)
                todo.append(copy.request_id)
    for current in reversed(order):
        request = requests.get(current)
        if current == request_id and request is not None:
            deletion.feed_item = request.verified and request.in_feed
            deletion.cache_entry = request.verified
        own = [*stores]
        if request is not None and request.collection and store_for is not None:
            other = store_for(request.collection)
            own += [other] if other is not None and other not in own else []
        learned = deletion.learned_records
        _delete_derived(current, deletion, stores=own, signals=signals, answers_source=answers_source)
        deleted = requests.delete(current)
        _delete_derived(current, deletion, stores=own, signals=signals, answers_source=answers_source)
        if current == request_id:
            deletion.request = deleted
            deletion.cache_entry = deletion.cache_entry and deletion.learned_records > learned
        elif deleted:
            deletion.cached_copies.append(current)
    return deletion


def _delete_derived(request_id: str, deletion: Deletion, *, stores: Sequence[VectorStore],
                    signals: LearnedSignals | None, answers_source: str) -> None:
    stored = answer_doc_id(request_id, answers_source)
    for store in stores:
        deletion.stored_answer_chunks += store.delete_documents([stored])
    if signals is not None:
        deletion.learned_records += signals.forget([request_id])
