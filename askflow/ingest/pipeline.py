"""Ingestion as steps an orchestrator can map and retry: list, index a batch, prune; and one step per Slack channel
or GitHub repository. ``askflow ingest`` runs the same indexing in one call; the DAGs run these steps so each batch
retries on its own and only references (a pinned location, relative paths) travel between tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import (
    index_documents,
    invalidate_answers,
    prune_documents,
    refuse_empty_listing,
    refuse_unavailable_share,
)
from askflow.ingest.sources.github_issues import load_repo_issues
from askflow.ingest.sources.slack import load_channel_threads
from askflow.ports import DocsLocation, Embeddings, VectorStore


def list_documents(location: DocsLocation) -> tuple[str, list[str]]:
    """The location pinned to the version being read (a git ref becomes its commit) and the relative paths of its
    documentation files. Every batch then reads that pinned location, so one run indexes one version."""
    return location.pin(), location.list()


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def index_batch(location: DocsLocation, relative_paths: list[str], *, store: VectorStore, embeddings: Embeddings,
                strategy: ChunkingStrategy, source: str, base_url: str | None = None) -> dict[str, Any]:
    documents = [location.load(relative, source=source, base_url=base_url) for relative in relative_paths]
    return index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=source,
                           prune=False).to_dict()


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


def index_slack_channel(channel: str, *, client, store: VectorStore, embeddings: Embeddings,
                        strategy: ChunkingStrategy, answers_source: str, source: str = "slack") -> dict[str, Any]:
    """One channel's threads; prunes only that channel's deleted threads. ``client``: slack_sdk's WebClient."""
    documents = load_channel_threads(client, channel, source=source)
    return index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=source,
                           scope=f"{source}:{channel}/", answers_source=answers_source).to_dict()


def index_github_repo(repo: str, *, client, store: VectorStore, embeddings: Embeddings, strategy: ChunkingStrategy,
                      answers_source: str, source: str = "github") -> dict[str, Any]:
    """One repository's issues; prunes only that repository's deleted issues. ``client``: PyGithub's Github."""
    documents = load_repo_issues(client, repo, source=source)
    return index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=source,
                           scope=f"{source}:{repo}/", answers_source=answers_source).to_dict()
