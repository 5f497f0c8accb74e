"""Relabelling: who may read a location's documents, changed without embedding anything, and carried to what was
derived from them (the stored answers that cited them; the cache checks its entries' sources as they are labelled
at lookup, ``learning.cache``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from askflow.domain.audiences import PUBLIC, audience_names, readers_of
from askflow.ports import VectorStore

log = logging.getLogger(__name__)


def relabel_location(store: VectorStore, *, prefix: str, audiences: Sequence[str], answers_source: str) -> dict:
    """Set the audiences of the stored documents under ``prefix`` (a source, ``docs:``; a folder of one,
    ``docs:guides/``; or one document's id), then of the stored answers that cited any of them. Returns what
    changed."""
    labels = audience_names(audiences)
    if not labels:
        raise ValueError("relabelling needs at least one audience")
    stored = store.document_audiences(prefix)
    if not prefix.endswith((":", "/")):  # a document id, not a folder: "docs:guides" is not "docs:guides-internal/"
        stored = {doc_id: labels for doc_id, labels in stored.items() if doc_id == prefix}
    changed = store.relabel(sorted(stored), labels) if stored else 0
    answers = relabel_answers(store, answers_source=answers_source, cited=set(stored)) if changed else 0
    log.info("relabelled %s: %d documents, %d chunks, %d stored answers", prefix, len(stored), changed, answers)
    return {"documents": len(stored), "chunks_relabelled": changed, "answers_relabelled": answers}


def relabel_answers(store: VectorStore, *, answers_source: str, cited: set[str] | None = None) -> int:
    """The stored answers (of ``answers_source``) that cite any of ``cited`` (all, for ``None``) get the readers of
    what they cite as it is labelled now and of the place they were asked in; returns how many chunks changed."""
    answers = {doc_id: metadata for doc_id, metadata in store.document_metadata(f"{answers_source}:").items()
               if cited is None or cited & set(metadata.get("cited") or {})}
    if not answers:
        return 0
    now = store.audiences_of(sorted({doc_id for meta in answers.values() for doc_id in meta.get("cited") or {}}))
    changed = 0
    for doc_id, metadata in answers.items():
        readers = readers_of([metadata.get("place", [PUBLIC]), *(now.get(cited_id) for cited_id in metadata["cited"])])
        changed += store.relabel([doc_id], readers)
    return changed
