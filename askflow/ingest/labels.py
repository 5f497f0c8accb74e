"""Relabelling: who may read a location's documents, changed without embedding anything, and carried to what was
derived from them: the stored answers that cited them, and the requests whose answers drew on them (who may read
them with ``GET /requests/{id}``, and whether the feed lists them: ``Request.relabelled``); the cache checks its
entries' sources as they are labelled at lookup (``learning.cache``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from askflow.domain.audiences import PUBLIC, audience_names, readers_of
from askflow.ports import RequestStore, VectorStore

log = logging.getLogger(__name__)
CITING_LIMIT = 100_000  # the requests of one document a relabelling reads (Firestore: one query, its index)
FEED_SCANNED = 1_000  # the feed's latest items a relabelling checks by their sources (answered before lineage)
RELABEL_ROUNDS = 5  # how often the requests are relabelled while another relabelling keeps changing their labels


def relabel_location(store: VectorStore, *, prefix: str, audiences: Sequence[str], answers_source: str,
                     requests: RequestStore | None = None) -> dict:
    """Set the audiences of the stored documents under ``prefix`` (a source, ``docs:``; a folder of one,
    ``docs:guides/``; or one document's id), after those of what was derived from them: the stored answers that
    cited any of them and (with ``requests``) the requests whose answers drew on them. Returns what changed."""
    labels = audience_names(audiences)
    if not labels:
        raise ValueError("relabelling needs at least one audience")
    stored = store.document_audiences(prefix)
    if not prefix.endswith((":", "/")):  # a document id, not a folder: "docs:guides" is not "docs:guides-internal/"
        stored = {doc_id: labels for doc_id, labels in stored.items() if doc_id == prefix}
    # what was derived follows first, even when the documents are labelled so already: a relabelling that stopped
    # (a request store out of reach) is finished by running it again
    derived = relabel_derived(store, requests, answers_source=answers_source,
                              labels=dict.fromkeys(stored, labels)) if stored else {}
    changed = store.relabel(sorted(stored), labels) if stored else 0
    answers, relabelled = derived.get("answers_relabelled", 0), derived.get("requests_relabelled", 0)
    log.info("relabelled %s: %d documents, %d chunks, %d stored answers, %d requests", prefix, len(stored), changed,
             answers, relabelled)
    return {"documents": len(stored), "chunks_relabelled": changed, "answers_relabelled": answers,
            "requests_relabelled": relabelled}


def relabelling(store: VectorStore, doc_ids: Sequence[str], audiences: Sequence[str]) -> dict[str, list[str]]:
    """Those of the stored ``doc_ids`` whose audiences are not yet ``audiences``, each with its new labels: what a
    run must carry to what was derived from them (``relabel_derived``) before it relabels them, so that a run
    stopped in between finds them still to do."""
    labels = audience_names(audiences)
    return {doc_id: labels for doc_id, now in store.audiences_of(list(doc_ids)).items()
            if now is None or sorted(now) != labels}


def relabel_derived(store: VectorStore, requests: RequestStore | None, *, answers_source: str | None,
                    labels: Mapping[str, Sequence[str]]) -> dict:
    """What was derived from the documents ``labels`` names, as they are (or are about to be) labelled there: the
    stored answers that cite them, then (with ``requests``) the requests whose answers drew on them or on those
    stored answers. Returns how many of each changed."""
    answers = relabel_answers(store, answers_source=answers_source, cited=set(labels),
                               overlay=labels) if answers_source else {}
    drew_on = set(labels) | set(answers)  # changed or not: an earlier run may have stopped before the requests
    return {"answers_relabelled": sum(answers.values()),
            "requests_relabelled": relabel_requests(requests, store, drew_on, overlay=labels)
            if requests is not None else 0}


def relabel_requests(requests: RequestStore, store: VectorStore, doc_ids: Iterable[str], *,
                     overlay: Mapping[str, Sequence[str]] | None = None) -> int:
    """The requests whose answers drew on any of ``doc_ids`` get the readers those documents now give (``overlay``:
    labels about to be written, which win over the stored ones; ``Request.relabelled``, worked out in the store's
    transaction): a page made internal takes its earlier answers out of the feed and away from anyone but their
    askers and admins; one made public lets them in. Found by their lineage (``RequestStore.citing``) or, answered
    before lineage was kept, among the feed's items by their sources. The labels are read again after the writes,
    until they hold still: a relabelling running beside this one, which read the requests before these writes, is
    caught up with. Returns how many requests changed."""
    wanted, overlay = set(doc_ids), dict(overlay or {})
    found = {request.request_id: request for doc_id in sorted(wanted)
             for request in requests.citing(doc_id, limit=CITING_LIMIT)}
    if len(found) >= CITING_LIMIT:
        log.warning("relabelling: %d requests drew on the relabelled documents; only the latest %d of each are "
                    "relabelled", len(found), CITING_LIMIT)
    found |= {request.request_id: request for request in requests.recent_good(FEED_SCANNED)
              if not request.cited_docs and wanted & set(request.drew_on)}
    if not found:
        return 0
    documents = sorted({doc_id for request in found.values() for doc_id in request.drew_on})

    def labels_now() -> dict:
        return store.audiences_of(documents) | {doc_id: list(labels) for doc_id, labels in overlay.items()
                                                if doc_id in documents}

    changed, labels = set(), labels_now()
    for _ in range(RELABEL_ROUNDS):
        changed |= {request_id for request_id in found if requests.relabel(request_id, labels)}
        settled, labels = labels, labels_now()
        if labels == settled:
            break
    return len(changed)


def relabel_answers(store: VectorStore, *, answers_source: str, cited: set[str] | None,
                    overlay: Mapping[str, Sequence[str]] | None = None) -> dict[str, int]:
    """The stored answers (of ``answers_source``) that cite any of ``cited`` (all, for ``None``) get the readers of
    what they cite as it is labelled now (``overlay``: labels about to be written, which win over the stored ones)
    and of the place they were asked in; returns, by stored answer, how many of its chunks changed."""
    answers = {doc_id: metadata for doc_id, metadata in store.document_metadata(f"{answers_source}:").items()
               if cited is None or cited & set(metadata.get("cited") or {})}
    if not answers:
        return {}
    now = store.audiences_of(sorted({doc_id for meta in answers.values() for doc_id in meta.get("cited") or {}}))
    now |= {doc_id: list(labels) for doc_id, labels in (overlay or {}).items()}
    changed = {}
    for doc_id, metadata in answers.items():
        readers = readers_of([metadata.get("place", [PUBLIC]), *(now.get(cited_id) for cited_id in metadata["cited"])])
        changed[doc_id] = store.relabel([doc_id], readers)
    return changed
