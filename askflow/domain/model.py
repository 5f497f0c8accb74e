"""The domain's records: documents, chunks, sources, answers, and the request with its rules."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from askflow.domain.audiences import PUBLIC, Viewer, readers_of

CHUNK_NAMESPACE = uuid.UUID("6f1c3f0e-4b7a-4f57-9a55-2b1d0c0a5e11")
#: a request id as the stores can hold it: never Firestore's reserved ``__...__``
REQUEST_ID_PATTERN = r"(?!__[A-Za-z0-9_-]*__(?![A-Za-z0-9_-]))[A-Za-z0-9_-]{1,64}"


def valid_request_id(request_id: str) -> bool:
    return re.fullmatch(REQUEST_ID_PATTERN, request_id) is not None


class SourceKind(str, enum.Enum):
    DOCS = "docs"
    SLACK = "slack"
    GITHUB = "github"
    ANSWERED_QUESTION = "answered_question"


class RequestStatus(str, enum.Enum):
    PENDING = "pending"
    ANSWERING = "answering"
    COMPLETE = "complete"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (RequestStatus.COMPLETE, RequestStatus.FAILED)


@dataclass(frozen=True)
class Document:
    """One unit of source content: a docs page, a Slack thread, a GitHub issue with its comments."""

    doc_id: str
    text: str
    title: str
    url: str
    kind: SourceKind = SourceKind.DOCS
    metadata: dict[str, Any] = field(default_factory=dict)
    audiences: tuple[str, ...] = (PUBLIC,)  # who may read it (``domain.audiences``), set by its location
    unavailable: str | None = None  # why its location could not read it this run: what is stored of it stays
    # lineage (``Provenance``): where it was read (a location as logs may show it) and its version there (a git
    # commit, an ETag, a GCS generation, ...); ingestion fills in what a location leaves empty
    location: str = ""
    version: str = ""

    @property
    def sha(self) -> str:
        """Its content's fingerprint; its audiences are not content: relabelling re-embeds nothing."""
        return content_hash(self.title, self.url, self.text)


@dataclass(frozen=True)
class Provenance:
    """Where a stored chunk came from (``askflow.ingest.provenance``): its document's ``location``, the document's
    ``version`` there ("commit <sha>", "etag <tag>", "generation <n>", "latest_reply <ts>", "updated_at <time>",
    "mtime <time>; sha256 <hash>"), when it was ingested and by which ``run`` ("airflow:<dag>/<run>/<task>[<map>]",
    "cli:<id>"). Not content: it never changes a chunk's id."""

    location: str = ""
    version: str = ""
    ingested_at: dt.datetime | None = None
    run: str = ""


@dataclass(frozen=True)
class Chunk:
    """A piece of a document as stored in the vector store.

    ``sha`` is the fingerprint of the document content *and* the chunking strategy: when either changes, every
    chunk of the document is replaced. ``context`` is what a model wrote to place the chunk in its document
    (``askflow.ingest.contextual``; empty until then, and for ever for a withheld audience's chunk): it is not
    content, so writing it keeps the chunk's id.
    """

    doc_id: str
    index: int
    content: str
    title: str
    section: str
    url: str
    sha: str
    kind: SourceKind = SourceKind.DOCS
    metadata: dict[str, Any] = field(default_factory=dict)
    audiences: tuple[str, ...] | None = (PUBLIC,)  # its document's; ``None``: stored unlabelled, admins only
    context: str = ""
    provenance: Provenance | None = None  # ``None``: stored before lineage, or not yet ingested

    @property
    def chunk_id(self) -> str:
        return str(uuid.uuid5(CHUNK_NAMESPACE, f"{self.doc_id}#{self.index}#{self.sha}"))

    @property
    def embedding_text(self) -> str:
        """What is embedded and keyword-indexed: the title and section path, then the model-written ``context``
        when there is one, give the chunk its place in its document."""
        heading = " > ".join(part for part in (self.title, self.section) if part)
        return "\n\n".join(part for part in (heading, self.context, self.content) if part)


@dataclass(frozen=True)
class ScoredChunk:
    chunk: Chunk
    score: float


class SourceOrigin(BaseModel):
    """Where a source's passage came from, as the store held it when the answer was written: the chunk, its
    document's fingerprint (``sha``: a re-ingested change gives another) and its ``Provenance``."""

    model_config = ConfigDict(frozen=True)

    chunk_id: str = ""
    sha: str = ""
    location: str = ""
    version: str = ""
    ingested_at: dt.datetime | None = None
    run: str = ""

    @classmethod
    def of(cls, chunk: Chunk) -> SourceOrigin:
        provenance = chunk.provenance or Provenance()
        return cls(chunk_id=chunk.chunk_id, sha=chunk.sha, location=provenance.location, version=provenance.version,
                   ingested_at=provenance.ingested_at, run=provenance.run)


class CitedVersion(SourceOrigin):
    """One source of an answer as its lineage keeps it: the source (number, document, title, link) and its origin."""

    n: int
    doc_id: str
    title: str = ""
    url: str = ""
    section: str = ""
    kind: str = SourceKind.DOCS.value
    cited: bool = True


class Lineage(BaseModel):
    """Where an answer came from: its sources as they were when it was ``answered_at`` (``CitedVersion``). A cached
    answer's is its ``origin``'s (the request whose verified answer it served, ``served_at``); a source of kind
    answered_question is an earlier verified answer (its own lineage is its request's). Kept on the request, never in
    its public view (``askflow lineage``)."""

    answered_at: dt.datetime | None = None
    origin: str | None = None
    served_at: dt.datetime | None = None
    sources: list[CitedVersion] = []

    @classmethod
    def of(cls, sources: Sequence[Source], *, at: dt.datetime) -> Lineage:
        return cls(answered_at=at, sources=[
            CitedVersion(n=s.n, doc_id=s.doc_id, title=s.title, url=s.url, section=s.section, kind=s.kind,
                         cited=s.cited, **(s.origin.model_dump() if s.origin is not None else {}))
            for s in sources])

    @property
    def doc_ids(self) -> list[str]:
        """The documents it drew on, each once (what ``Request.cited_docs`` holds, for ``RequestStore.citing``)."""
        return sorted({source.doc_id for source in self.sources if source.doc_id})


class Source(BaseModel):
    """A numbered source as cited in an answer: ``[n]`` in the text cites the source numbered ``n``."""

    model_config = ConfigDict(frozen=True)

    n: int
    title: str
    url: str
    doc_id: str = ""
    section: str = ""
    kind: str = SourceKind.DOCS.value
    excerpt: str = ""
    date: str = Field(default="", exclude=True)  # the passage's (YYYY-MM-DD) as the prompt gives it; never stored
    cited: bool = True  # False: given to the model, never cited by its answer
    # who may read its document, as the search found it (None: unlabelled): what the answer's ``readers`` are made
    # of when it is written; never serialised, so no view or stored copy of a source names an audience
    audiences: list[str] | None = Field(default=None, exclude=True)
    # where its passage came from, as the search found it: what the answer's ``lineage`` is made of; never serialised
    # (the request keeps it in its lineage, apart from the sources every view shows)
    origin: SourceOrigin | None = Field(default=None, exclude=True)


@dataclass(frozen=True)
class Usage:
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Tokens(BaseModel):
    prompt: int = 0
    completion: int = 0


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]
    mode: str  # "llm" or "extractive"
    queries: list[str]
    usage: list[Usage]
    timings_ms: dict[str, float]
    context_turns: int = 0
    embedding_model: str = ""  # the serving pair that found the sources
    collection: str = ""
    cached_from: str | None = None  # mode "cached": the request whose verified answer this is
    cache_similarity: float | None = None  # and how close the question came to that request's
    citations_removed: int = 0  # citations of sources the model was never given
    standalone_question: str | None = None  # a follow-up's stand-alone rewording (the cheap model's first)
    grounded: bool = False  # every sentence cites a source it was given (``citations.grounded``)
    cached_verified_by: str | None = None  # mode "cached": who verified the answer it was served from
    confidence: float | None = None  # ``retrieval.confidence``: the top document's fused score
    not_sure: str | None = None  # why askflow is not sure of it (``None``: it is): a person is asked
    embedding_usage: list[Usage] = field(default_factory=list)  # the question's embedding (tokens estimated)
    readers: list[str] | None = None  # mode "cached": who may read the answer it was served from
    rerank_usd: float = 0.0  # what reranking its documents cost (``ModelReranking``, at ASKFLOW_MODEL_PRICES)
    lineage: Lineage | None = None  # mode "cached": the lineage of the answer it was served from (its request's)

    @property
    def models(self) -> list[str]:
        return sorted({u.model for u in self.usage})

    @property
    def tokens(self) -> Tokens:
        return Tokens(prompt=sum(u.prompt_tokens for u in self.usage),
                      completion=sum(u.completion_tokens for u in self.usage))


class Rating(BaseModel):
    """One person's rating of an answer; a later one from the same rater replaces it."""

    positive: bool
    comment: str | None = None
    at: dt.datetime


class SlackThread(BaseModel):
    """Where a question asked in Slack came from, so the answer goes back to its thread."""

    channel: str
    ts: str
    thread_ts: str
    user: str | None = None
    in_thread: bool = False
    reply_ts: str | None = None  # askflow's reply, posted at once and edited as the answer is written


class Grade(BaseModel):
    """The evaluation loop's judgement of an answer (``method``: ``llm`` or ``heuristic``; only a model judges
    ``grounded``: whether the passages the answer cites say what it says)."""

    helpfulness: int = Field(ge=1, le=5)
    relevance: int = Field(ge=1, le=5)
    public: bool
    reason: str = ""
    method: str = "heuristic"
    grounded: bool | None = None


#: the rater of a web or API request: whoever holds its asker token
ASKER_RATER = "asker"


class Approval(BaseModel):
    """A reviewer's decision on an answer (``approved``, or turned down): who (an admin credential's name, an
    IAP e-mail, a Slack user id), when, and from where (``admin`` page or ``slack``). Kept on the request and in the
    audit log."""

    by: str = Field(min_length=1, max_length=200)
    at: dt.datetime
    via: str
    approved: bool = True


class Request(BaseModel):
    """One question's durable record, from the moment the API stores it to its grade.

    The rules that decide what may happen to it next (the worker's lease, the deadline, what grading depends on)
    are its methods; stores read and write it, and never decide.
    """

    model_config = ConfigDict(extra="ignore")

    request_id: str
    question: str
    thread_id: str | None = None
    status: RequestStatus = RequestStatus.PENDING
    created_at: dt.datetime
    updated_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None  # when Firestore's TTL policy deletes it (``request_retention_days``)
    attempts: int = 0
    slack: SlackThread | None = None
    # the worker's progress
    published_at: dt.datetime | None = None
    received_at: dt.datetime | None = None
    claimed_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None  # the answering worker's last sign of life
    requeued_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    delivering_at: dt.datetime | None = None  # a worker took the delivery (``delivery_claimable``)
    delivered_at: dt.datetime | None = None  # what follows the final write (the Slack reply, the cost counted) done
    error: str | None = None
    # the answer
    answer: str | None = None
    partial_answer: str | None = None  # the answer so far, while the model writes it (``sources``: those so far)
    sources: list[Source] = []
    mode: str | None = None
    queries: list[str] = []
    models: list[str] = []
    tokens: Tokens | None = None
    timings_ms: dict[str, float] = {}
    context_turns: int = 0
    embedding_model: str | None = None  # the serving pair that found the sources
    collection: str | None = None
    fresh: bool = False  # the asker wants a new answer, not a verified earlier one
    asker_sha: str | None = None  # sha256 of the asker's token (web and API): who may follow up and rate
    audiences: list[str] | None = [PUBLIC]  # what its answer may draw on: its place's audiences (None: an admin's)
    asked_in_public: bool = True  # asked where anyone may see it (an anonymous web, API or MCP asker)
    readers: list[str] | None = None  # who may read its answer: its sources' and its place's (``readers_of``)
    # who sees the place it was asked in: [public] for a public one; a Slack channel's readers; [] (admins only) for
    # a direct message, a group DM, or a web, API or MCP asker who sees more than public (shown to them alone)
    place_readers: list[str] = [PUBLIC]
    in_feed: bool = False  # may be listed in shared places, once graded good (``is_public`` when it was answered)
    budget_identities: list[str] = []  # whose budgets it counts against (hashed where they name a person)
    trace_id: str | None = None  # its trace (OpenTelemetry), when tracing is on
    traceparent: str | None = None  # the API span that stored it: what the worker and grading continue or link to
    cached_from: str | None = None
    cache_similarity: float | None = None
    cached_verified_by: str | None = None  # who verified the answer it was served from (shown with it)
    confidence: float | None = None  # how sure askflow is of its answer (``retrieval.confidence``)
    not_sure: str | None = None  # why it is not sure (``None``: it is): the question goes to a person
    citations_removed: int = 0
    standalone_question: str | None = None  # a follow-up's stand-alone rewording: what it is stored and served as
    grounded: bool | None = None  # every sentence of its answer cites a source it was given (``trust.grounded``)
    partial_writes: int = 0  # how often the answer so far was written while the model wrote it
    cost_usd: float | None = None  # what its model calls cost (rewording, answer, embedding): the price table's
    # feedback and grading
    ratings: dict[str, Rating] = {}
    rated_at: dt.datetime | None = None
    grade: Grade | None = None
    is_good: bool | None = None
    grade_reason: str | None = None
    graded_at: dt.datetime | None = None
    graded_revision: str | None = None
    # trust (``learning.trust``): a reviewer's decision, and what the grading run made of it all
    approval: Approval | None = None
    verified: bool = False  # served from the cache, listed, written back, positive evidence: nothing else is
    verified_by: str | None = None  # "reviewer <who>", or "model judge and asker"
    in_review: bool = False  # in the review queue: its asker rated it up and nothing verified it
    # a person's answer (``Escalation``): its own field, written apart from the worker's outcome
    escalation: Escalation | None = None
    # where its answer came from (``Lineage``), never in its public view; ``cited_docs``: its documents' ids, the
    # array ``RequestStore.citing`` queries
    lineage: Lineage | None = None
    cited_docs: list[str] = []

    #: what a worker's final write sets (and nothing else: ratings may arrive meanwhile)
    OUTCOME_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "status", "error", "answer", "partial_answer", "sources", "mode", "queries", "models", "tokens", "timings_ms",
        "context_turns", "embedding_model", "collection", "completed_at", "received_at", "published_at",
        "cached_from", "cache_similarity", "citations_removed", "partial_writes", "cost_usd", "readers", "in_feed",
        "standalone_question", "grounded", "cached_verified_by", "confidence", "not_sure", "lineage", "cited_docs"})
    #: what a worker writes while it answers (its claim still standing): kept apart from the request (in Firestore a
    #: subdocument, which the grading trigger does not watch), shown with it while the same attempt answers
    PROGRESS_FIELDS: ClassVar[frozenset[str]] = frozenset({"partial_answer", "sources"})
    #: what a grading run sets
    GRADE_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "grade", "is_good", "grade_reason", "graded_at", "graded_revision", "verified", "verified_by", "in_review"})

    @field_serializer("status")
    def _status_value(self, status: RequestStatus) -> str:
        return status.value

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def asked_by(self, token: str | None) -> bool:
        """Whether ``token`` is the token of whoever asked this (web and API requests; Slack ones have none)."""
        return bool(self.asker_sha and token) and hmac.compare_digest(self.asker_sha, token_sha(token))

    @property
    def in_web_thread(self) -> bool:
        """A follow-up in a web thread: the thread began with another request."""
        return bool(self.thread_id) and self.thread_id != self.request_id

    def lease_held(self, now: dt.datetime, lease_s: float) -> bool:
        """A worker claimed it and showed a sign of life (the claim, or a heartbeat) less than ``lease_s`` ago: it
        may still be answering. A worker that died stops its heartbeats, and its lease runs out ``lease_s`` later."""
        if self.status is not RequestStatus.ANSWERING or self.claimed_at is None:
            return False
        alive = max(self.claimed_at, self.heartbeat_at or self.claimed_at)
        return (now - alive).total_seconds() < lease_s

    def held_by(self, worker: Request) -> bool:
        """This stored request is still ``worker``'s claim: answering, in the attempt ``worker`` claimed. Every write a
        worker makes under its claim (a heartbeat, its Slack reply, its progress) is fenced by this rule."""
        return self.status is RequestStatus.ANSWERING and self.attempts == worker.attempts

    def accepts_outcome(self, outcome: Request) -> bool:
        """A final write (an answer, a failure) lands only on a request not yet terminal and still in the attempt its
        writer read: a worker whose expired lease another worker took over, or a deadline read before a new claim,
        writes nothing."""
        return not self.terminal and self.attempts == outcome.attempts

    def delivery_claimable(self, now: dt.datetime, lease_s: float) -> bool:
        """A terminal request whose delivery is not done and not held by a worker that took it less than ``lease_s``
        ago: one delivery at a time, and one that died is taken over when its lease runs out."""
        if not self.terminal or self.delivered_at is not None:
            return False
        return self.delivering_at is None or (now - self.delivering_at).total_seconds() >= lease_s

    def claimable(self, now: dt.datetime, lease_s: float) -> bool:
        return not self.terminal and not self.lease_held(now, lease_s)

    def claimed(self, now: dt.datetime) -> Request:
        """This attempt's claim: whatever an earlier attempt had written of its answer is gone."""
        return self.model_copy(update={"status": RequestStatus.ANSWERING, "claimed_at": now,
                                       "attempts": self.attempts + 1, "updated_at": now,
                                       "partial_answer": None, "sources": []})

    def answering(self, text: str, sources: Sequence[Source]) -> Request:
        """The answer so far, with the sources it cites so far."""
        return self.model_copy(update={"partial_answer": text, "sources": list(sources)})

    def replied_in_slack(self, reply_ts: str) -> Request:
        return self.model_copy(update={"slack": self.slack.model_copy(update={"reply_ts": reply_ts})})

    def past_deadline(self, now: dt.datetime, deadline_s: float) -> bool:
        return (now - self.created_at).total_seconds() > deadline_s

    def readable_by(self, viewer: Viewer, *, token: str | None = None) -> bool:
        """Whether ``viewer`` (with the asker ``token``) may see this request: a public one anyone (one whose team's
        answer is internal: its internal audience); another only its asker (web, API, MCP: their token) and admins (a
        Slack one: admins, Slack shows it in its thread)."""
        if viewer.admin or (self.is_public and (not self.team_internal or viewer.may_read(self.team_readers))):
            return True
        return bool(self.asker_sha) and self.asked_by(token)

    @property
    def is_public(self) -> bool:
        """Asked in a public place, and answered (if it was) only from what everyone may read."""
        return self.asked_in_public and (self.readers is None or self.readers == [PUBLIC]) and \
            self.audiences == [PUBLIC] and self.place_readers == [PUBLIC]

    def completed(self, answer: Answer, *, at: dt.datetime, cost_usd: float | None = None,
                  history_readers: Sequence[Sequence[str] | None] = ()) -> Request:
        # the place, every source given (cited or not: the model saw it) and what the conversation drew on before
        given = [answer.readers] if answer.cached_from else [s.audiences for s in answer.sources]
        readers = readers_of([self.place_readers, *given, *history_readers])
        in_feed = self.model_copy(update={"readers": readers}).is_public
        if answer.cached_from:  # the verified answer's own lineage (its sources alone, when it was not given)
            lineage = (answer.lineage or Lineage.of(answer.sources, at=at)).model_copy(
                update={"origin": answer.cached_from, "served_at": at})
        else:
            lineage = Lineage.of(answer.sources, at=at)
        return self.model_copy(update={"lineage": lineage, "cited_docs": lineage.doc_ids,
            "cost_usd": cost_usd, "readers": readers, "in_feed": in_feed,
            "status": RequestStatus.COMPLETE, "completed_at": at, "error": None, "answer": answer.text,
            "partial_answer": None,
            "sources": list(answer.sources), "mode": answer.mode, "queries": list(answer.queries),
            "models": answer.models, "tokens": answer.tokens, "timings_ms": dict(answer.timings_ms),
            "context_turns": answer.context_turns, "embedding_model": answer.embedding_model or None,
            "collection": answer.collection or None, "cached_from": answer.cached_from,
            "cache_similarity": answer.cache_similarity, "citations_removed": answer.citations_removed,
            "standalone_question": answer.standalone_question, "cached_verified_by": answer.cached_verified_by,
            "confidence": answer.confidence, "not_sure": answer.not_sure,
            "grounded": answer.grounded})

    def relabelled(self, labels: Mapping[str, Sequence[str] | None]) -> list[str]:
        """Who may read its answer once the documents it drew on (``cited_docs``) are labelled as ``labels`` says
        (doc id -> audiences as stored now). Worked out again from its place and its documents when all of them are
        still stored and nothing else went into it; otherwise (a cached answer, a follow-up that drew on its
        conversation, a document gone) only narrowed: what it was, and the new labels."""
        drawn_on = self.drew_on
        drawn = [labels[doc_id] for doc_id in drawn_on if doc_id in labels]
        recomputable = self.cached_from is None and not self.context_turns and self.readers is not None and \
            bool(drawn_on) and all(doc_id in labels for doc_id in drawn_on)
        return readers_of([self.place_readers, *drawn]) if recomputable else readers_of([self.readers, *drawn])

    @property
    def drew_on(self) -> list[str]:
        """The documents its answer drew on: its lineage's (``cited_docs``), or, answered before lineage was kept,
        its sources'."""
        return self.cited_docs or sorted({source.doc_id for source in self.sources if source.doc_id})

    def with_readers(self, readers: Sequence[str]) -> Request:
        """Its answer readable by ``readers``, and listed in the feed only if that makes it public (and no reviewer
        marked its team's answer internal)."""
        relabelled = self.model_copy(update={"readers": list(readers)})
        return relabelled.model_copy(update={"in_feed": relabelled.is_public and not relabelled.team_internal})

    def failed(self, error: str) -> Request:
        """Failed, with no half answer left behind."""
        return self.model_copy(update={"status": RequestStatus.FAILED, "error": error, "answer": None,
                                       "partial_answer": None, "sources": [], "lineage": None, "cited_docs": []})

    def revision(self) -> str | None:
        """What grading depends on: a completed answer, its ratings and a reviewer's decision. ``None`` when there is
        nothing to grade."""
        if self.status is not RequestStatus.COMPLETE:
            return None
        ratings = {rater: rating.positive for rater, rating in self.ratings.items()}
        approval = self.approval.model_dump(mode="json") if self.approval is not None else None
        team = self.team_answer.model_dump(mode="json") if self.team_answer is not None else None
        return content_hash(self.answer or "", json.dumps(ratings, sort_keys=True),
                            json.dumps(approval, sort_keys=True), json.dumps(team, sort_keys=True))[:16]

    @property
    def team_answer(self) -> TeamAnswer | None:
        """The team's answer to it, when a person answered it."""
        return self.escalation.answer if self.escalation is not None else None

    @property
    def team_readers(self) -> list[str]:
        """Who may read the team's answer (stored, served from the cache): its place's readers, narrowed to its
        internal audience when a reviewer marked it internal (``readers_of``: a place neither public nor inside that
        audience leaves admins only)."""
        team = self.team_answer
        if team is None or team.internal is None:
            return list(self.place_readers)
        return readers_of([self.place_readers, [team.internal]])

    @property
    def team_internal(self) -> bool:
        """A reviewer marked the team's answer internal: its asker reads it, no shared place lists it."""
        return self.team_answer is not None and self.team_answer.internal is not None

    @property
    def served_answer(self) -> str | None:
        """What is served again and stored when it is verified: the team's answer, or askflow's."""
        return self.team_answer.text if self.team_answer is not None else self.answer

    @property
    def net_rating(self) -> int:
        """Thumbs up minus thumbs down."""
        return sum(1 if rating.positive else -1 for rating in self.ratings.values())

    @property
    def asker_rater(self) -> str | None:
        """Whose rating is the asker's: the asking Slack user's (``slack-<id>``; no other clicker's), or the asker
        token's holder for a web or API question (``None``: nobody's, as for an MCP question)."""
        if self.slack is not None:
            return f"slack-{self.slack.user}" if self.slack.user else None
        return ASKER_RATER if self.asker_sha else None

    @property
    def asker_rating(self) -> bool | None:
        """The asker's own rating: ``True`` (👍), ``False`` (👎), ``None`` (none)."""
        rating = self.ratings.get(self.asker_rater) if self.asker_rater else None
        return rating.positive if rating is not None else None

    @property
    def asker_key(self) -> str:
        """Who asked, as the review queue counts askers: their token's hash, their Slack user, or the request."""
        return self.asker_sha or self.asker_rater or self.request_id

    @property
    def follow_up(self) -> bool:
        """Answered with the conversation before it: its own words are not a question on their own."""
        return self.context_turns > 0

    @property
    def stored_question(self) -> str:
        """What it is stored and matched as: a follow-up's stand-alone rewording, or the question itself."""
        return self.standalone_question or self.question


class TeamAnswer(BaseModel):
    """A person's answer to an escalated question: a reply in the escalation's thread that a reviewer marked as the
    answer. ``by``: its author, ``marked_by``: the reviewer; ``ts``: the reply's (one answer per reply). ``internal``:
    the audience a reviewer narrowed it to (``ASKFLOW_ESCALATION_INTERNAL_AUDIENCE`` when marked; ``None``: it is
    read where it was asked)."""

    text: str = Field(min_length=1, max_length=20_000)
    by: str
    marked_by: str
    at: dt.datetime
    ts: str
    internal: str | None = None


class Escalation(BaseModel):
    """A question handed to the team: ``open`` (posted in ``channel`` as ``ts``), ``answered`` (``answer``),
    ``joined`` (a repeat of the open escalation ``joined``: it is answered with it) or ``skipped`` (``why_not``: the
    channel may not read it, a budget, no channel). ``why``: why askflow was not sure, or that its asker asked."""

    state: str
    why: str
    asked_at: dt.datetime
    question_key: str = ""
    channel: str | None = None
    ts: str | None = None
    thread: str | None = None  # "channel/ts": how a reply's thread finds its request
    joined: str | None = None
    why_not: str | None = None
    answer: TeamAnswer | None = None
    posting_at: dt.datetime | None = None  # state "posting": a worker took the post (its lease: ``POSTING_LEASE_S``)
    delivering_at: dt.datetime | None = None  # a worker took the delivery of the team's answer
    delivered_at: dt.datetime | None = None  # the team's answer reached the asker's thread (Slack)

    POSTING_LEASE_S: ClassVar[float] = 120.0
    #: the skip by the audience rule: it stays (a later request is skipped again, never retried)
    MAY_NOT_READ: ClassVar[str] = "the escalation channel's members may not read it"

    @property
    def retriable(self) -> bool:
        """Skipped for a reason that may pass (no channel configured then, a budget): a later explicit request for a
        person tries again. A skip by the audience rule stays."""
        return self.state == "skipped" and self.why_not != self.MAY_NOT_READ

    @staticmethod
    def settable(stored: Escalation | None, replacing: Escalation | None) -> bool:
        """Whether an escalation may be set over ``stored`` (``RequestStore.escalate``, the rule both stores keep):
        none is stored, or ``replacing`` is the skipped one stored and it may be retried."""
        if replacing is None:
            return stored is None
        return stored is not None and stored.retriable and stored.asked_at == replacing.asked_at

    def delivery_claimable(self, now: dt.datetime, lease_s: float) -> bool:
        """The team's answer waits for delivery, and no worker took it less than ``lease_s`` ago (the rule both stores
        keep, as ``Request.delivery_claimable`` is for the answer's)."""
        return self.answer is not None and self.delivered_at is None and (
            self.delivering_at is None or (now - self.delivering_at).total_seconds() >= lease_s)

    def posting_stale(self, now: dt.datetime) -> bool:
        """A post taken by a worker that did not finish it within its lease (it died): another may take it over."""
        return self.state == "posting" and (self.posting_at is None or
                                            (now - self.posting_at).total_seconds() >= self.POSTING_LEASE_S)


class AuditEntry(BaseModel):
    """One reviewer decision as the audit log keeps it: who, when, from where, what (the request, approved or
    turned down)."""

    request_id: str
    action: str  # "approved" or "turned down"
    by: str
    via: str
    at: dt.datetime

    @classmethod
    def of(cls, request_id: str, approval: Approval) -> AuditEntry:
        return cls(request_id=request_id, action="approved" if approval.approved else "turned down",
                   by=approval.by, via=approval.via, at=approval.at)

    @property
    def entry_id(self) -> str:
        """The same decision written twice (a retried write) is one entry."""
        return content_hash(self.request_id, self.action, self.by, self.at.isoformat())[:32]


class Graded(BaseModel):
    """What a grading run writes on a request: the grade, and whether it is verified (``learning.trust``)."""

    grade: Grade
    is_good: bool
    grade_reason: str
    graded_at: dt.datetime
    graded_revision: str
    verified: bool = False
    verified_by: str | None = None
    in_review: bool = False


class LearnedAnswer(BaseModel):
    """What the evaluation loop learned from one graded answer: its vote on the documents it cited (+1 good, -1
    bad, 0 no evidence: private) and, when it is verified (graded good, public, not itself served from the cache),
    the answer to serve again for the same question. One per request: grading it again replaces it."""

    request_id: str
    collection: str
    embedding_model: str
    vote: int = Field(ge=-1, le=1)
    cited: dict[str, str]  # doc_id -> its fingerprint when graded: a changed or pruned source voids the record
    question: str
    question_key: str
    verified: bool
    answer: str | None = None
    sources: list[Source] = []
    graded_at: dt.datetime
    readers: list[str] | None = None  # who may be served it (``Request.readers``); None: admins only
    verified_by: str | None = None  # ``Request.verified_by``: shown with the answer when it is served again


class VerifiedMatch(BaseModel):
    """A verified answer found for a question, and how: ``exact`` (the same normalised question) or ``semantic``."""

    answer: LearnedAnswer
    similarity: float
    how: str
    lineage: Lineage | None = None  # its request's, when the cache read it (``AnswerCache``)


def token_sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


class EvaluationRun(BaseModel):
    """One grading run's summary: what it graded, kept and rejected (by reason), and what the model calls cost."""

    run_id: str
    method: str
    events: int
    graded: int = 0
    good: int = 0
    verified: int = 0
    in_review: int = 0
    ungraded: int = 0  # the judge gave no grade: queued again
    rejected: dict[str, int] = {}
    skipped: int = 0
    llm_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    started_at: dt.datetime
    finished_at: dt.datetime | None = None


class Serving(BaseModel):
    """The embedding model and the collection of its vectors that questions are answered from. They change
    together, in one write, so no question is embedded with one model and searched against another's vectors."""

    model: str
    collection: str
    base_model: str = ""  # the configured model it derives from: it serves only while that is still configured
    switched_at: dt.datetime | None = None
    reason: str = ""
    previous: Serving | None = None


class TrainedModel(BaseModel):
    """A fine-tuned embedding model as saved: its name (``base-ft-<hash>``), where it is, and what it cost."""

    name: str
    path: str
    sha256: str
    base_model: str
    pairs: int
    steps: int
    seconds: float
    cpu_seconds: float
    size_bytes: int


class FinetuneRun(BaseModel):
    """One fine-tuning run: the pairs, the training cost, champion and challenger side by side, the decision."""

    run_id: str
    base_model: str
    pairs_fingerprint: str
    pairs: int
    pairs_by_kind: dict[str, int]
    challenger: TrainedModel | None = None
    trained_now: bool = False
    champion_metrics: dict[str, float] = {}
    challenger_metrics: dict[str, float] = {}
    metric: str = "mrr@10"
    margin: float = 0.0
    promoted: bool = False
    decision: str = ""
    serving: Serving | None = None
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
