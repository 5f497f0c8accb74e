"""The ports: small interfaces the core talks to. The adapters (one module per technology) implement them; the
composition root picks which."""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from askflow.domain.messages import Message
from askflow.domain.model import (
    Approval,
    AuditEntry,
    Chunk,
    Document,
    Escalation,
    EvaluationRun,
    FinetuneRun,
    Graded,
    LearnedAnswer,
    Rating,
    Request,
    ScoredChunk,
    Serving,
    TeamAnswer,
    TrainedModel,
    Usage,
)
from askflow.insights.model import CoverageGap, InsightsReport


class VectorStore(abc.ABC):
    """Chunks with their vectors, searched by keywords and by vector together (hybrid)."""

    @abc.abstractmethod
    def ensure_collection(self, dimension: int) -> None:
        """Create the collection if it does not exist; idempotent."""

    @abc.abstractmethod
    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Write chunks by their deterministic ids; returns how many were written."""

    @abc.abstractmethod
    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of these documents; returns how many chunks went."""

    @abc.abstractmethod
    def document_fingerprints(self, prefix: str) -> dict[str, str]:
        """``doc_id -> sha`` for the stored documents whose id starts with ``prefix``."""

    @abc.abstractmethod
    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """``doc_id -> sha`` for those of ``doc_ids`` that are stored (an indexed lookup, not a scan)."""

    @abc.abstractmethod
    def document_chunks(self, doc_id: str, *, audiences: Sequence[str] | None) -> list[Chunk]:
        """Every stored chunk of one document, in document order (empty when it is not stored, or when
        ``audiences`` may not read it)."""

    @abc.abstractmethod
    def relabel(self, doc_ids: Sequence[str], audiences: Sequence[str]) -> int:
        """Set who may read these documents' chunks (no embedding, no other change); returns how many chunks
        changed."""

    @abc.abstractmethod
    def audiences_of(self, doc_ids: Sequence[str]) -> dict[str, list[str] | None]:
        """``doc_id -> audiences`` (``None``: unlabelled) for those of ``doc_ids`` that are stored (an indexed
        lookup)."""

    @abc.abstractmethod
    def scope_audiences(self, prefix: str) -> list[str] | None:
        """The audiences of one stored document whose id starts with ``prefix`` (what a location's new documents are
        labelled with when its run names none); ``None`` when none is stored or it is unlabelled."""

    @abc.abstractmethod
    def document_audiences(self, prefix: str) -> dict[str, list[str] | None]:
        """``doc_id -> audiences`` (``None``: unlabelled) of the stored documents whose id starts with ``prefix``."""

    @abc.abstractmethod
    def document_metadata(self, prefix: str) -> dict[str, dict[str, Any]]:
        """``doc_id -> metadata`` (of its first chunk) for the stored documents whose id starts with ``prefix``."""

    @abc.abstractmethod
    def hybrid_search(
        self, text: str, vector: Sequence[float], *, limit: int, alpha: float, audiences: Sequence[str] | None
    ) -> list[ScoredChunk]:
        """Keyword and vector search fused; ``alpha`` = 1 is pure vector, 0 pure keyword.

        ``audiences``: only chunks naming one of them are found, filtered inside each query (so limits, ranking and
        fusion never see another), and a selective filter still fills ``limit`` when enough chunks match;
        ``None``: no filter (an admin's search). Every caller says which."""

    @abc.abstractmethod
    def keyword_search(self, text: str, *, limit: int, audiences: Sequence[str] | None) -> list[ScoredChunk]:
        """Keyword search alone (BM25 or the like), best first; a query with no known word finds nothing;
        ``audiences`` as in ``hybrid_search``."""

    @abc.abstractmethod
    def count(self) -> int:
        """How many chunks the collection holds."""

    @abc.abstractmethod
    def chunks(self, *, after: str | None, limit: int) -> list[Chunk]:
        """Up to ``limit`` stored chunks in chunk-id order, starting after the chunk id ``after`` (paging through the
        whole collection, to embed it again with another model)."""

    def finalize_writes(self) -> None:  # noqa: B027 (an optional hook: empty, not abstract)
        """Called once after a batch of writes, to refresh whatever the store derives from its content."""

    def close(self) -> None:  # noqa: B027 (an optional hook: empty, not abstract)
        """Release connections."""


class Embeddings(abc.ABC):
    name: str
    dimension: int

    @abc.abstractmethod
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@dataclass(frozen=True)
class TrainingRow:
    """One training example: a query, the passage it should find, and one it should not."""

    anchor: str
    positive: str
    negative: str


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage


class ChatModel(abc.ABC):
    name: str

    @abc.abstractmethod
    def complete(self, system: str, user: str, *, json_output: bool = False) -> Completion: ...

    def stream(self, system: str, user: str, *, on_text: Callable[[str], None]) -> Completion:
        """``complete``, telling ``on_text`` the reply so far (the whole text, never a delta) as it is written.

        A model that cannot stream tells it once, whole. A call retried after a failure mid-stream starts its text
        again from nothing, so ``on_text`` never sees a retry's words appended to a failed attempt's.
        """
        completion = self.complete(system, user)
        on_text(completion.text)
        return completion


class RequestStore(abc.ABC):
    """The durable record of every question: one ``Request`` per id. State changes are atomic; the rules that decide
    them are the ``Request``'s own."""

    @abc.abstractmethod
    def create(self, request: Request) -> None:
        """Store a new request; raises ``Duplicate`` when the id is taken."""

    @abc.abstractmethod
    def get(self, request_id: str) -> Request | None: ...

    @abc.abstractmethod
    def claim(self, request_id: str, *, lease_s: float) -> Request | None:
        """Atomically move a request to ``answering`` for this worker (``Request.claimed``).

        Returns the claimed request when this worker may answer it, ``None`` when it is unknown, terminal, or
        another worker holds an unexpired lease (``Request.claimable``).
        """

    @abc.abstractmethod
    def heartbeat(self, request: Request, *, at: dt.datetime) -> bool:
        """The answering worker is alive: extend its lease, while its claim stands (``Request.held_by``). Returns
        whether it wrote; a worker whose claim was lost writes nothing."""

    @abc.abstractmethod
    def reply_started(self, request: Request) -> bool:
        """Keep the Slack reply the answering worker posted (``request.slack``), while its claim stands, so that a
        later attempt edits the same message. Returns whether it wrote."""

    @abc.abstractmethod
    def progress(self, request: Request) -> bool:
        """Write what the answering worker has so far (``Request.PROGRESS_FIELDS``) while its claim stands, where it
        does not change the request itself (no grading trigger fires); ``get`` shows it while the same attempt
        answers. Returns whether it wrote; a worker whose claim was lost writes nothing."""

    @abc.abstractmethod
    def finish(self, request: Request) -> bool:
        """Atomically write the request's outcome (``Request.OUTCOME_FIELDS``) when the stored request accepts it
        (``Request.accepts_outcome``: not terminal, the writer's attempt); returns whether it wrote."""

    @abc.abstractmethod
    def claim_delivery(self, request_id: str, *, lease_s: float) -> bool:
        """Take the delivery of a terminal request (what follows its final write) for this worker: ``True`` when it
        is not delivered and no other worker took it less than ``lease_s`` ago (``Request.delivery_claimable``)."""

    @abc.abstractmethod
    def delivered(self, request_id: str, *, at: dt.datetime) -> None:
        """Note that what follows a request's final write (its Slack reply, its cost counted) was done."""

    @abc.abstractmethod
    def unfinished(self, *, updated_before: dt.datetime, limit: int) -> list[Request]:
        """Requests not yet in a terminal state and last changed before ``updated_before``, oldest first."""

    @abc.abstractmethod
    def thread_history(self, thread_id: str, *, before: dt.datetime, limit: int = 4) -> list[tuple[str, str]]:
        """(question, answer) of the thread's completed requests created before ``before``, oldest first."""

    @abc.abstractmethod
    def thread_readers(self, thread_id: str, *, before: dt.datetime, limit: int = 4) -> list[list[str] | None]:
        """The ``readers`` of the requests ``thread_history`` returns (what a follow-up's answer inherits)."""

    @abc.abstractmethod
    def mark_requeued(self, request_id: str, *, at: dt.datetime) -> None:
        """Note that the request was queued again (the requeue sweep), so the next sweep waits for it."""

    @abc.abstractmethod
    def save_grade(self, request_id: str, graded: Graded) -> bool:
        """Write a grading run's verdict when the request is still at the revision it judged (atomic: a verdict on
        an older revision, a rating or a reviewer's decision since, writes nothing: that change's own event brings
        its grading); never changes the status. Returns whether it wrote."""

    @abc.abstractmethod
    def rate(self, request_id: str, rater: str, rating: Rating) -> Request | None:
        """Set ``rater``'s rating on a completed request (replacing theirs); returns the request as it now is
        (unchanged when it is not complete), ``None`` if unknown."""

    @abc.abstractmethod
    def recent_good(self, limit: int) -> list[Request]:
        """The most recent verified requests (``Request.verified``) that may be listed in shared places
        (``in_feed``), newest first: the filter is in the query."""

    @abc.abstractmethod
    def review_queue(self, limit: int) -> list[Request]:
        """The requests waiting for a reviewer (``in_review``), newest first: the filter is in the query."""

    @abc.abstractmethod
    def approve(self, request_id: str, approval: Approval) -> Request | None:
        """Set a reviewer's decision on a completed request and add it to the audit log, in one atomic write (the
        same decision written again is one entry); returns the request as it now is (unchanged when it is not
        complete), ``None`` if unknown."""

    @abc.abstractmethod
    def audit_log(self, limit: int) -> list[AuditEntry]:
        """The latest reviewer decisions, newest first."""

    @abc.abstractmethod
    def escalate(self, request_id: str, escalation: Escalation, *, replacing: Escalation | None = None) -> bool:
        """Set a terminal request's escalation when it has none — or, with ``replacing``, when it is still that skipped
        one and may be retried (``Escalation.retriable``, the same ``asked_at``) — atomic: two racing escalations
        leave one; returns whether this call set it."""

    @abc.abstractmethod
    def settle_escalation(self, request_id: str, escalation: Escalation) -> bool:
        """Replace an escalation in state ``posting`` (taken for its post) by ``escalation`` (atomic); returns whether
        it wrote."""

    @abc.abstractmethod
    def claim_escalation_delivery(self, request_id: str, *, lease_s: float) -> bool:
        """Take the delivery of a request's team answer for this worker: ``True`` when it is not delivered and no other
        worker took it less than ``lease_s`` ago (atomic)."""

    @abc.abstractmethod
    def answer_escalation(self, request_id: str, answer: TeamAnswer) -> Request | None:
        """Set the team's answer on an escalated request (``answered``) unless another reply was marked first; the
        same reply marked again changes nothing. Returns the request as it now is (``None``: unknown)."""

    @abc.abstractmethod
    def mark_team_answer_internal(self, request_id: str, reply_ts: str, audience: str) -> Request | None:
        """Narrow the team's answer (the reply ``reply_ts``) to ``audience`` and take the request out of the feed
        (``in_feed``), unless it is marked already: the same mark again changes nothing (atomic). Returns the request
        as it now is (``None``: unknown)."""

    @abc.abstractmethod
    def relabel(self, request_id: str, labels: Mapping[str, Sequence[str] | None]) -> bool:
        """Set who may read a terminal request's answer once the documents it drew on are labelled as ``labels``
        says (``Request.relabelled``, worked out on the request as stored, inside one atomic read-check-write), and
        so whether the feed may list it (``Request.with_readers``). Returns whether anything changed (the same
        readers again, or an unknown or unfinished request: nothing)."""

    @abc.abstractmethod
    def escalation_delivered(self, request_id: str, *, at: dt.datetime) -> None:
        """Note that the team's answer reached the asker's thread."""

    @abc.abstractmethod
    def escalated_in(self, thread: str) -> Request | None:
        """The request whose escalation was posted as ``thread`` ("channel/ts")."""

    @abc.abstractmethod
    def open_escalations(self, question_key: str) -> list[Request]:
        """Requests whose escalation is ``open`` for the question ``question_key``."""

    @abc.abstractmethod
    def joined_to(self, request_id: str) -> list[Request]:
        """Requests whose escalation joined ``request_id``'s."""

    @abc.abstractmethod
    def escalations(self, limit: int) -> list[Request]:
        """The latest escalated requests, newest escalation first."""

    @abc.abstractmethod
    def created_between(self, start: dt.datetime, end: dt.datetime, *, page_size: int = 500) -> Iterator[Request]:
        """Every request created in [start, end), oldest first, read a page at a time."""

    @abc.abstractmethod
    def citing(self, doc_id: str, *, limit: int = 500) -> list[Request]:
        """The requests whose answer's lineage names the document ``doc_id`` (``Request.cited_docs``, an indexed
        array query), newest first."""

    @abc.abstractmethod
    def cached_copies(self, request_id: str, *, limit: int = 500) -> list[Request]:
        """The requests served ``request_id``'s verified answer from the cache (``Request.cached_from``: an equality
        query on one field)."""

    @abc.abstractmethod
    def delete(self, request_id: str) -> bool:
        """Remove the request and what is kept beside it (its worker's progress); the audit log keeps its entries.
        Returns whether there was a request to remove (removing it again is no error)."""


@dataclass(frozen=True)
class ThreadReply:
    """A reply in an escalation's thread: its text, author and thread's ``ts``, and its reactions (name -> the users
    who reacted)."""

    text: str
    author: str
    thread_ts: str
    reactions: dict[str, list[str]] = field(default_factory=dict)


class Escalations(abc.ABC):
    """The place the team answers escalated questions (the Slack adapter's ``SlackEscalations``, or
    ``GitHubEscalations``)."""

    @property
    def place(self) -> str | None:
        """Where escalations are posted, as ``Escalation.channel`` names it (``github:owner/name``; ``None``:
        ``ASKFLOW_ESCALATION_CHANNEL``)."""
        return None

    def marked(self) -> list[tuple[str, str, TeamAnswer]]:
        """The answers reviewers marked in the place itself, as (request id, the escalation's ``ts`` the mark is on,
        answer): a GitHub reviewer's command comment on an open escalation issue (its number); none where marks come
        as events (Slack's reactions)."""
        return []

    def close(self, request: Request) -> None:
        """Note in the place that ``request``'s escalation is answered (GitHub: its issue is closed); nothing where the
        thread stays (Slack)."""
        return None

    @abc.abstractmethod
    def readers(self) -> list[str]:
        """What everyone in the escalation channel may read (``Viewer`` audiences): only questions they may read go
        there."""

    @abc.abstractmethod
    def posted(self, request: Request, *, since: dt.datetime) -> str | None:
        """The ``ts`` of the escalation of ``request`` already posted since ``since`` (a retry after a death between
        the post and its note), or ``None``."""

    @abc.abstractmethod
    def post(self, request: Request, *, why: str) -> str:
        """Post the question, the attempted answer, its sources and the asker's surface; returns its ``ts``."""

    @abc.abstractmethod
    def reply(self, channel: str, ts: str) -> ThreadReply | None:
        """The message ``ts`` in ``channel`` as a reply in its thread: ``None`` when it is no reply in a thread."""

    @abc.abstractmethod
    def deliver(self, request: Request, answer: TeamAnswer) -> None:
        """Post the team's answer in the asker's Slack thread."""


class Budgets(abc.ABC):
    """Question and dollar counters per asker identity and window (``BudgetLimits`` decides)."""

    @abc.abstractmethod
    def admit(self, identities: Sequence[str], *, at: dt.datetime, key: str | None = None,
              kind: str = "questions") -> None:
        """Count one more of ``kind`` ("questions" or "lookups") for each of ``identities`` and for everyone in
        ``at``'s window, unless a limit is reached: then ``OverBudget`` and nothing is counted. Atomic under
        concurrent asks. With ``key`` (a request id), admitting the same key again in the window counts nothing
        and refuses nothing where it was counted, also when two admits of it race and after one that was never
        followed by its request's creation."""

    @abc.abstractmethod
    def spend(self, identities: Sequence[str], usd: float, *, at: dt.datetime, key: str | None = None) -> None:
        """Add what an answer cost to the counters of the window it was asked in; with ``key`` (the request id), once
        per key however often it is called."""


class EvaluationRuns(abc.ABC):
    """Summaries of the evaluation loop's grading runs."""

    @abc.abstractmethod
    def save(self, run: EvaluationRun) -> None: ...


class LearnedSignals(abc.ABC):
    """What the evaluation loop learned from graded answers (``LearnedAnswer``, one per request): the votes behind
    document priors, and the verified answers served again. Whether a record still holds (its cited sources
    unchanged) is the core's to check against the vector store; this only stores and finds."""

    @abc.abstractmethod
    def record(self, answers: Sequence[LearnedAnswer], vectors: Sequence[Sequence[float] | None]) -> None:
        """Store each answer under its request id, replacing what that request had; ``vectors``: the question's
        embedding (``None``: the record is never found by question)."""

    @abc.abstractmethod
    def citing(self, doc_ids: Sequence[str]) -> list[LearnedAnswer]:
        """The records with a vote (non-zero) that cite any of ``doc_ids`` (an indexed lookup)."""

    @abc.abstractmethod
    def verified_by_key(self, question_key: str, *, collection: str,
                        readers: Sequence[str] | None = None) -> list[LearnedAnswer]:
        """Verified answers of ``collection`` to the same normalised question, newest first; with ``readers``, only
        those one of them may read (``LearnedAnswer.readers``), filtered in the query."""

    @abc.abstractmethod
    def nearest(self, vector: Sequence[float], *, collection: str, embedding_model: str, limit: int,
                verified_only: bool, readers: Sequence[str] | None = None) -> list[tuple[LearnedAnswer, float]]:
        """The records of ``collection`` with a vote (or only the verified answers) whose question embedding (by
        ``embedding_model``) is closest to ``vector``: (record, cosine similarity), closest first; ``readers`` as in
        ``verified_by_key``."""

    @abc.abstractmethod
    def question_vectors(self, request_ids: Sequence[str], *, embedding_model: str) -> dict[str, list[float]]:
        """The stored question embeddings (by ``embedding_model``) of those of ``request_ids`` that have one."""

    @abc.abstractmethod
    def forget(self, request_ids: Sequence[str]) -> int:
        """Remove these requests' records; returns how many went."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every record (an evaluation's fresh start)."""

    def close(self) -> None:  # noqa: B027 (an optional hook: empty, not abstract)
        """Release connections."""


class InsightsReports(abc.ABC):
    """Question-insights reports, one per period: saving a period's report again replaces it."""

    @abc.abstractmethod
    def save(self, report: InsightsReport) -> None: ...

    @abc.abstractmethod
    def get(self, report_id: str) -> InsightsReport | None: ...

    @abc.abstractmethod
    def latest(self) -> InsightsReport | None:
        """The report of the most recent period."""


class ReportFiles(abc.ABC):
    """Where rendered reports go (a folder, a bucket)."""

    @abc.abstractmethod
    def write(self, name: str, data: bytes, *, content_type: str) -> str:
        """Write (or replace) ``name``; returns where it is (a path or a gs:// URI)."""


class GapIssues(abc.ABC):
    """An issue tracker of the docs, where coverage gaps are filed."""

    @abc.abstractmethod
    def file(self, gap: CoverageGap, *, report: InsightsReport) -> str:
        """File the gap, or update the issue filed for it before (its ``key``); returns "filed" or "updated"."""


class DocsLocation(Protocol):
    """Where documentation files live, named by one string (a folder, ``gs://BUCKET/PREFIX``, ``git+URL@REF``)."""

    def pin(self) -> str:
        """This location as a string that names one fixed version of it."""

    @property
    def public(self) -> str:
        """This location as logs may show it: without credentials."""

    def list(self) -> list[str]:
        """Relative paths of the documentation files, sorted."""

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document: ...


class ServingIndex(abc.ABC):
    """Which embedding model and collection answer questions now; one atomic record."""

    @abc.abstractmethod
    def get(self) -> Serving | None:
        """The serving pair, or ``None`` when none was ever switched to (the settings' model and collection)."""

    @abc.abstractmethod
    def switch(self, serving: Serving) -> None:
        """Make ``serving`` the pair that answers, in one write."""


class EmbeddingTrainer(abc.ABC):
    """Trains a challenger embedding model from the serving one."""

    @abc.abstractmethod
    def train(self, pairs: Sequence[TrainingRow], *, models_dir: Path, steps: int, batch_size: int,
              learning_rate: float, seed: int) -> TrainedModel:
        """Fine-tune on (anchor, positive, negative) rows and save the model under ``models_dir`` as
        ``<base>-ft-<hash of its weights>``."""


class FinetuneRuns(abc.ABC):
    """Summaries of fine-tuning runs."""

    @abc.abstractmethod
    def save(self, run: FinetuneRun) -> None: ...


class EventBus(abc.ABC):
    @abc.abstractmethod
    def publish(self, topic: str, message: Message, **attributes: str) -> str:
        """Publish a message as JSON; returns the message id."""


@dataclass(frozen=True)
class RerankCandidate:
    """One document as a reranker reads it: its id, title and best passages (cut to the model's input limit)."""

    doc_id: str
    title: str
    text: str


class Reranker(abc.ABC):
    """A model that scores documents for a question (a cross-encoder behind an API). ``name`` is its model,
    ``provider`` who serves it (the traces' ``gen_ai.provider.name``)."""

    name: str
    provider: str

    @abc.abstractmethod
    def rerank(self, question: str, candidates: Sequence[RerankCandidate], *, timeout_s: float) -> list[str]:
        """The candidates' ids, best first, as the model scores them (one call, within ``timeout_s``). Raises
        ``ModelUnavailable`` when trying again may help (429, 5xx, a time-out, a dropped connection), another error
        when it would not (a refused key, an unknown model, an answer that is not a ranking of the candidates)."""

    def close(self) -> None:  # noqa: B027 (an optional hook: empty, not abstract)
        """Release connections."""


class GroupDirectory(abc.ABC):
    """Who belongs to the organisation's groups (Google groups, as the Cloud Identity Groups API knows them)."""

    @abc.abstractmethod
    def is_member(self, group: str, email: str) -> bool:
        """Whether ``email`` is a member of the group whose address is ``group``, directly or through a group in it.
        Raises ``DirectoryUnavailable`` when the directory cannot say (an unknown group, a refusal, a time-out)."""

    def close(self) -> None:  # noqa: B027 (an optional hook: empty, not abstract)
        """Release connections."""
