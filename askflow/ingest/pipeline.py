"""Ingestion as steps an orchestrator can map and retry: list, index a batch, prune; and one step per Slack channel
or GitHub repository, which reads only what changed since the last run. ``askflow ingest`` runs the same indexing in
one call; the DAGs run these steps so each batch retries on its own and only references (a pinned location, relative
paths) travel between tasks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from askflow.domain.audiences import audience_names
from askflow.domain.clock import utcnow
from askflow.domain.model import Document
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import (
    IndexingResult,
    index_documents,
    invalidate_answers,
    prune_documents,
    refuse_empty_listing,
    refuse_unavailable_share,
)
from askflow.ingest.labels import relabel_derived, relabelling
from askflow.ingest.sources.github_issues import read_repo_issues
from askflow.ingest.sources.slack import Workspace, read_channel
from askflow.ports import DocsLocation, Embeddings, RequestStore, VectorStore


def list_documents(location: DocsLocation) -> tuple[str, list[str], dict[str, dict]]:
    """The location pinned to the version being read (a git ref becomes its commit), the relative paths of its
    documentation files, and what this listing found of each that loading it needs (a website's ``listed``: a page's
    sitemap ``lastmod``, or what the crawl read of it; ``{}`` for files). Every batch then reads that pinned location
    as this listing found it, on whichever worker it runs, so one run indexes one version."""
    pinned, paths = location.pin(), location.list()
    return pinned, paths, dict(getattr(location, "listed", {}))


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def index_batch(location: DocsLocation, relative_paths: list[str], *, store: VectorStore, embeddings: Embeddings,
                strategy: ChunkingStrategy, source: str, base_url: str | None = None,
                audiences: Sequence[str] | None = None, listed: Mapping[str, dict] | None = None,
                run: str | None = None, answers_source: str | None = None,
                requests: Callable[[], RequestStore | None] | None = None) -> dict[str, Any]:
    """One batch of a location's documents, labelled with the location's ``audiences`` (``None``: as stored,
    ``index_documents``), loaded as the run's listing found them (``listed``: what ``list_documents`` gave of these
    paths, handed to the location that loads them). ``run``: the run writing (``provenance.airflow_run``), each
    chunk's provenance with the location. A relabelled document's stored answers (``answers_source``) and earlier
    answers (``requests``: opens the request store) follow it."""
    if listed:
        location.remember(listed)
    documents = [location.load(relative, source=source, base_url=base_url) for relative in relative_paths]
    return index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=source,
                           prune=False, audiences=audiences, run=run, location=location.public,
                           answers_source=answers_source, requests=requests).to_dict()


def prune_and_finalize(relative_paths: list[str], *, store: VectorStore, embeddings: Embeddings, source: str,
                       answers_source: str, allow_empty: bool = False, unavailable: Mapping[str, str] | None = None,
                       max_unavailable_share: float = 1.0) -> dict[str, Any]:
    """Delete what the source no longer has, drop the stored answers whose cited sources changed, then refresh the
    store's derived statistics. An empty listing of a source with stored documents fails (``allow_empty``), and so
    does, once pruned, a run whose batches could not read more than ``max_unavailable_share`` of the listing
    (``unavailable``: doc id -> why, what the batches reported)."""
    store.ensure_collection(embeddings.dimension)
    scope = f"{source}:"
    stored = store.document_fingerprints(prefix=scope)
    refuse_empty_listing(len(relative_paths), stored, scope=scope, allow_empty=allow_empty)
    documents, chunks = prune_documents(store, scope=scope, keep={f"{source}:{p}" for p in relative_paths},
                                        stored=stored)
    invalidated = invalidate_answers(store, answers_source=answers_source)
    store.finalize_writes()
    refuse_unavailable_share(unavailable or {}, len(relative_paths), max_share=max_unavailable_share)
    return {"documents_pruned": documents, "chunks_deleted": chunks, "answers_invalidated": invalidated,
            "unavailable": dict(unavailable or {})}


def run_number(at: dt.datetime, *, run_period: dt.timedelta) -> int:
    """The run scheduled at ``at``, numbered by the ``run_period``s since the Unix epoch: every worker agrees on it
    with no stored state."""
    return int(at.timestamp() // run_period.total_seconds())


def reconcile_due(at: dt.datetime, *, run_period: dt.timedelta, every_runs: int) -> bool:
    """Whether the run scheduled at ``at`` is the one in ``every_runs`` that lists its whole source (the reconcile),
    by its ``run_number``: hourly runs and 24 reconcile at the 00:00 UTC run, daily runs and 7 every seventh day.
    0: never; 1: every run."""
    if every_runs <= 0:
        return False
    return run_number(at, run_period=run_period) % every_runs == 0


def index_slack_channel(channel: str, *, client, store: VectorStore, embeddings: Embeddings,
                        strategy: ChunkingStrategy, answers_source: str, reply_window_s: float,
                        audiences: Sequence[str], full_sync: bool = False, app_id: str | None = None,
                        reread_every: int = 0, reread_turns: Collection[int] = (),
                        source: str = "slack", run: str | None = None,
                        requests: Callable[[], RequestStore | None] | None = None) -> dict[str, Any]:
    """One channel's threads that are new or changed since the last run, and its deleted threads pruned; what a run
    costs, and what the reconcile (``full_sync``) adds: ``askflow.ingest.sources.slack``. ``client``: slack_sdk's
    WebClient. ``audiences``: who may read the channel (``SlackAudiences.channel_readers``): every thread of it,
    the unchanged ones relabelled when that changed (a channel made private). ``app_id``: askflow's Slack app
    (``ASKFLOW_SLACK_APP_ID``; unset: asked of Slack when a message needs it), whose messages are never indexed.
    ``reread_every``/``reread_turns``: which shares of the listed threads have their replies read again for edits
    (``askflow.ingest.sources.slack.rereads``). ``run``: the run writing (``provenance.airflow_run``). ``requests``:
    opens the request store, so a relabelled thread's earlier answers follow it (``labels.relabel_derived``)."""
    scope = f"{source}:{channel}/"
    store.ensure_collection(embeddings.dimension)
    stored = store.document_metadata(scope)
    changes = read_channel(client, channel, stored=stored, workspace=Workspace.of(client, app_id=app_id),
                           reply_window_s=reply_window_s, full=full_sync, reread_every=reread_every,
                           reread_turns=reread_turns, source=source)
    if changes.oldest is None:
        refuse_empty_listing(changes.listed, stored, scope=scope, allow_empty=False)
    result = _write_changes(changes.documents, changes.gone, store=store, embeddings=embeddings, strategy=strategy,
                            source=source, scope=scope, answers_source=answers_source, audiences=audiences,
                            stored=stored, run=run, requests=requests, location=f"slack:{channel}")
    return result.to_dict() | {"full_sync": changes.oldest is None, "listed": changes.listed,
                               "listed_from": changes.oldest, "reread": changes.reread}


def index_github_repo(repo: str, *, client, store: VectorStore, embeddings: Embeddings, strategy: ChunkingStrategy,
                      answers_source: str, audiences: Sequence[str], full_sync: bool = False,
                      closed_max_age_days: int | None = None, gap_label: str | None = None,
                      listed_until: str | None = None, source: str = "github",
                      run: str | None = None,
                      requests: Callable[[], RequestStore | None] | None = None) -> dict[str, Any]:
    """One repository's issues that are new or updated since the last run, and the issues to prune (deleted ones at
    the reconcile, ``full_sync``; with ``closed_max_age_days``, those closed longer ago than that; askflow's own gap
    issues, labelled ``gap_label``); what a run costs: ``askflow.ingest.sources.github_issues``. ``client``:
    PyGithub's Github. ``audiences``: who may read the repository's issues (``repository_audiences``), the unchanged
    ones relabelled when that changed. ``listed_until``: the watermark the last run returned (its summary's
    ``listed_until``: the newest ``updated_at`` it listed, pull requests and skipped issues included), where this
    listing starts when no stored issue is as recent. ``run``: the run writing (``provenance.airflow_run``).
    ``requests``: opens the request store, so a relabelled issue's earlier answers follow it."""
    scope = f"{source}:{repo}/"
    store.ensure_collection(embeddings.dimension)
    stored = store.document_metadata(scope)
    closed_before = None if closed_max_age_days is None else (utcnow() - dt.timedelta(days=closed_max_age_days)).date()
    changes = read_repo_issues(client, repo, stored=stored, full=full_sync, closed_before=closed_before,
                               gap_label=gap_label, listed_until=listed_until, source=source)
    if changes.since is None:
        refuse_empty_listing(changes.listed, stored, scope=scope, allow_empty=False)
    result = _write_changes(changes.documents, changes.gone, store=store, embeddings=embeddings, strategy=strategy,
                            source=source, scope=scope, answers_source=answers_source, audiences=audiences,
                            stored=stored, run=run, requests=requests, location=f"https://github.com/{repo}")
    return result.to_dict() | {"full_sync": changes.since is None, "listed": changes.listed,
                               "listed_since": changes.since, "listed_until": changes.listed_until}


def _write_changes(documents: list[Document], gone: Collection[str], *, store: VectorStore, embeddings: Embeddings,
                   strategy: ChunkingStrategy, source: str, scope: str, answers_source: str,
                   audiences: Sequence[str], stored: Mapping[str, Any], run: str | None = None,
                   location: str | None = None,
                   requests: Callable[[], RequestStore | None] | None = None) -> IndexingResult:
    """Index ``documents`` (new, or read again because their sync point moved), then delete the ``gone`` ones and
    the stored answers citing them. A document read again whose text is unchanged is written anyway, or its stored
    sync point would stay behind and it would be read again on every run (a thread whose only new reply is askflow's
    own, an issue whose assignee changed): one embedding of it."""
    current = store.fingerprints([document.doc_id for document in documents])
    behind = [document.doc_id for document in documents
              if current.get(document.doc_id) == strategy.document_sha(document, embeddings.name)]
    if behind:
        store.delete_documents(behind)
    result = index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=source,
                             prune=False, scope=scope, answers_source=answers_source, audiences=audiences,
                             run=run, location=location, requests=requests)
    unchanged = sorted(set(stored) - set(gone) - {document.doc_id for document in documents})
    due = relabelling(store, unchanged, audiences) if unchanged else {}
    if due:  # the source's audiences changed: what was derived follows first, then what was stored
        relabel_derived(store, requests() if requests is not None else None, answers_source=answers_source,
                        labels=due)
        result.chunks_relabelled += store.relabel(unchanged, audience_names(audiences))
    if gone:
        result.documents_pruned = len(gone)
        result.chunks_deleted += store.delete_documents(sorted(gone))
        result.answers_invalidated += invalidate_answers(store, answers_source=answers_source)
        store.finalize_writes()
    return result
