"""One indexing call for every source: dedup, update and pruning are the same mechanism.

Like LangChain's record manager with ``cleanup="full"``: every stored document carries a fingerprint of its content,
the chunking strategy and the embedding model. A document whose fingerprint is unchanged is skipped (nothing is
embedded or written); a changed one has its chunks replaced; a stored document of the same source that the source
no longer lists is pruned. A document its location could not read this run (``Document.unavailable``: a page
answering 403 or 503) is neither: what is stored of it stays, the result reports it, and past a share of them the
run fails. ``reindex_chunks`` embeds and writes again stored chunks whose context arrived after them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from askflow import faults
from askflow.domain.audiences import PUBLIC, audience_names
from askflow.domain.clock import utcnow
from askflow.domain.errors import AskflowError, InvalidInput
from askflow.domain.model import Chunk, Document
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.provenance import process_run, stamped
from askflow.ports import Embeddings, RequestStore, VectorStore

log = logging.getLogger(__name__)
EMBED_SLICE = 64  # chunks embedded per call while progress is told (the local model's own batch)


class SourceIncomplete(AskflowError):
    """More of a source's documents could not be read this run than a run may leave unread: what was read is
    indexed and what is stored of the rest is kept, but the run fails, so that someone looks."""


@dataclass
class IndexingResult:
    documents_seen: int = 0
    documents_skipped: int = 0
    documents_written: int = 0
    documents_pruned: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    answers_invalidated: int = 0
    chunks_relabelled: int = 0  # of unchanged documents whose location's audiences changed
    seconds: dict[str, float] = field(default_factory=lambda: {"split": 0.0, "embed": 0.0, "write": 0.0})
    unavailable: dict[str, str] = field(default_factory=dict)  # doc id -> why it could not be read (kept as stored)
    # the unchanged documents whose audiences the run changed: what was derived from them followed them
    # (``labels.relabel_derived``)
    relabelled: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.documents_written or self.documents_pruned)

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "relabelled"}


def index_documents(
    documents: Iterable[Document],
    *,
    store: VectorStore,
    embeddings: Embeddings,
    strategy: ChunkingStrategy,
    source: str,
    prune: bool = True,
    batch_chunks: int = 256,
    answers_source: str | None = None,
    scope: str | None = None,
    allow_empty: bool = False,
    audiences: Sequence[str] | None = None,
    own_audiences: bool = False,
    max_unavailable_share: float = 1.0,
    progress: Callable[[str, int, int], None] | None = None,
    run: str | None = None,
    location: str | None = None,
    requests: Callable[[], RequestStore | None] | None = None,
) -> IndexingResult:
    """Bring the store's documents of ``source`` in line with ``documents``.

    :param scope: the doc-id prefix that ``documents`` cover completely (default: the whole source), so that one
        Slack channel's run prunes only that channel.
    :param allow_empty: let no documents at all prune every stored one of the scope. Otherwise that is refused:
        an empty listing is far more often a wrong path or an outage than a source that was emptied on purpose.
    :param audiences: who may read every one of ``documents``, as the run names them (their location's audiences):
        a stored document whose content is unchanged but whose audiences differ is relabelled, never embedded
        again. ``None``: the location's audiences as stored (those of a stored document of the scope: a daily run
        that names none changes no label), and ``public`` for a location never indexed.
    :param own_audiences: each document carries its own audiences (stored answers: their readers), kept as they are.
    :param max_unavailable_share: once all is written and pruned, fail (``SourceIncomplete``) when more than this
        share of ``documents`` could not be read (``Document.unavailable``); they keep what is stored either way.
    :param progress: told ``("embedding chunks", embedded, split)`` as each slice of ``EMBED_SLICE`` chunks is
        embedded (``split``: the chunks split so far, all of them once the last document is split).
    :param run: the run writing (``askflow.ingest.provenance``: ``airflow_run``, ``cli_run``; default: this
        process's ``process_run``), and ``location`` where ``documents`` were read (a document's own ``location``
        comes first, its URL last): each written chunk's ``Provenance``, with its document's version and the time.
    :param requests: opens the request store (called only when a run labels documents): a relabelled document's
        earlier answers get its new readers (``labels.relabel_derived``), as its stored answers do. ``None`` (or a
        store out of reach): only the stored answers; the result's ``relabelled`` says which documents' wait.
    """
    run = run or process_run()
    ingested_at = utcnow()
    scope = scope or f"{source}:"
    if not scope.startswith(f"{source}:"):
        raise ValueError(f"scope {scope!r} is not within source {source!r}")
    store.ensure_collection(embeddings.dimension)
    if prune:  # what the source no longer lists is pruned: every stored document of the scope counts
        stored = store.document_fingerprints(prefix=scope)
    else:  # only these documents count: look them up by id instead of listing the scope
        documents = list(documents)
        stored = store.fingerprints([document.doc_id for document in documents])
    result = IndexingResult()
    seen: set[str] = set()
    pending: list[tuple[Document, list[Chunk]]] = []
    unchanged: dict[tuple[str, ...], list[str]] = {}  # audiences -> unchanged documents: relabelled, not re-embedded
    split = embedded = 0  # chunks, for progress

    def tell() -> None:
        if progress is not None:
            progress("embedding chunks", embedded, split)

    def flush() -> None:
        nonlocal embedded
        if not pending:
            return
        chunks = [c for _, cs in pending for c in cs]
        texts = [c.embedding_text for c in chunks]
        started = time.perf_counter()
        step = EMBED_SLICE if progress is not None else max(len(texts), 1)  # a slice at a time, to be told
        vectors: list[list[float]] = []
        for start in range(0, len(texts), step):
            tell()
            vectors += embeddings.embed_documents(texts[start:start + step])
            embedded += len(texts[start:start + step])
        tell()
        result.seconds["embed"] += time.perf_counter() - started
        started = time.perf_counter()
        result.chunks_deleted += store.delete_documents([d.doc_id for d, _ in pending if d.doc_id in stored])
        result.chunks_written += store.upsert(chunks, vectors)
        result.seconds["write"] += time.perf_counter() - started
        result.documents_written += len(pending)
        pending.clear()
        faults.kill_point("ingest.after_batch")

    relabelling = audiences is not None or own_audiences
    if not own_audiences:
        labels = tuple(audience_names(audiences if audiences is not None else
                                      store.scope_audiences(scope) or [PUBLIC]))
        documents = (dataclasses.replace(document, audiences=labels) for document in documents)
    for document in documents:
        if not document.doc_id.startswith(scope):
            raise ValueError(f"document {document.doc_id!r} is not within {scope!r}")
        result.documents_seen += 1
        seen.add(document.doc_id)
        if document.unavailable is not None:  # not read this run: what is stored of it stays as it is
            result.unavailable[document.doc_id] = document.unavailable
            continue
        sha = strategy.document_sha(document, embeddings.name)
        if stored.get(document.doc_id) == sha:
            result.documents_skipped += 1
            if relabelling:
                unchanged.setdefault(tuple(sorted(document.audiences)), []).append(document.doc_id)
            continue
        started = time.perf_counter()
        chunks = stamped(strategy.split(document, sha), document, run=run, at=ingested_at, location=location)
        result.seconds["split"] += time.perf_counter() - started
        if not chunks and document.doc_id not in stored:  # nothing to write, nothing stored to replace (a 404)
            result.documents_skipped += 1
            continue
        pending.append((document, chunks))
        split += len(chunks)
        if sum(len(cs) for _, cs in pending) >= batch_chunks:
            flush()
    flush()
    if unchanged:
        from askflow.ingest.labels import relabel_derived, relabelling

        opened = functools.cache(requests) if requests is not None else lambda: None  # opened once, if at all
        for audiences, doc_ids in unchanged.items():
            due = relabelling(store, doc_ids, audiences)
            if due and source != answers_source:  # what was derived first: a run stopped in between redoes it
                relabel_derived(store, opened(), answers_source=answers_source, labels=due)
            result.chunks_relabelled += store.relabel(doc_ids, audiences)
            result.relabelled += sorted(due)

    if prune:
        faults.kill_point("ingest.before_prune")
        refuse_empty_listing(result.documents_seen, stored, scope=scope, allow_empty=allow_empty)
        pruned, deleted = prune_documents(store, scope=scope, keep=seen, stored=stored)
        result.documents_pruned, result.chunks_deleted = pruned, result.chunks_deleted + deleted
    if result.changed:
        if answers_source and source != answers_source:
            result.answers_invalidated = invalidate_answers(store, answers_source=answers_source)
        store.finalize_writes()
    log.info("indexed source %s: %s", source, result.to_dict())
    refuse_unavailable_share(result.unavailable, result.documents_seen, max_share=max_unavailable_share)
    return result


def reindex_chunks(chunks: Sequence[Chunk], *, store: VectorStore, embeddings: Embeddings) -> int:
    """Embed and write again stored chunks whose embedded text changed and content did not (a model wrote their
    ``context``: ``askflow.ingest.contextual``), by their ids. A chunk of a document stored since in another version
    (its fingerprint no longer the stored one) is not written: a late context never brings a replaced chunk back.
    Returns how many were written."""
    current = store.fingerprints(sorted({chunk.doc_id for chunk in chunks}))
    standing = [chunk for chunk in chunks if current.get(chunk.doc_id) == chunk.sha]
    if not standing:
        return 0
    return store.upsert(standing, embeddings.embed_documents([chunk.embedding_text for chunk in standing]))


def refuse_empty_listing(listed: int, stored: dict[str, str], *, scope: str, allow_empty: bool) -> None:
    if not listed and stored and not allow_empty:
        raise InvalidInput(f"no documents found for {scope!r}, which holds {len(stored)} stored documents: refusing "
                           "to delete them all (to empty it on purpose, allow an empty listing: --prune-all)")


def refuse_unavailable_share(unavailable: Mapping[str, str], listed: int, *, max_share: float) -> None:
    """Fail the run (``SourceIncomplete``, naming the first few and why) when more than ``max_share`` of its
    ``listed`` documents could not be read; called once the run's writes and deletes are done."""
    if not listed or len(unavailable) <= max_share * listed:
        return
    named = "; ".join(f"{doc_id}: {why}" for doc_id, why in sorted(unavailable.items())[:5])
    more = f"; and {len(unavailable) - 5} more" if len(unavailable) > 5 else ""
    raise SourceIncomplete(f"{len(unavailable)} of {listed} documents could not be read ({named}{more}): more than "
                           f"{max_share:.0%} of them fails the run; what is stored of them is kept")


def prune_documents(
    store: VectorStore, *, scope: str, keep: set[str], stored: dict[str, str] | None = None
) -> tuple[int, int]:
    """Delete the stored documents whose id starts with ``scope`` and is not in ``keep``; returns (documents,
    chunks) deleted."""
    stored = stored if stored is not None else store.document_fingerprints(prefix=scope)
    gone = sorted(set(stored) - keep)
    return (len(gone), store.delete_documents(gone)) if gone else (0, 0)


def invalidate_answers(store: VectorStore, *, answers_source: str) -> int:
    """Remove stored answers whose cited sources changed or are gone; returns how many went."""
    answers = store.document_metadata(f"{answers_source}:")
    if not answers:
        return 0
    cited = sorted({doc_id for metadata in answers.values() for doc_id in metadata.get("cited") or {}})
    current = store.fingerprints(cited)
    stale = [
        doc_id for doc_id, metadata in answers.items()
        if any(current.get(doc_id) != sha for doc_id, sha in (metadata.get("cited") or {}).items())
    ]
    if stale:
        store.delete_documents(stale)
        log.info("invalidated %d stored answers whose sources changed", len(stale))
    return len(stale)
