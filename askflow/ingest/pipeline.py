"""Ingestion as steps an orchestrator can map and retry: list, index a batch, prune. ``askflow ingest`` runs the
same indexing in one call; the DAGs run these steps so each batch retries on its own and only references (relative
paths) travel between tasks."""

from __future__ import annotations

from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents, invalidate_answers, prune_documents
from askflow.ingest.locations import open_location


def list_documents(location: str) -> tuple[str, list[str]]:
    """The location pinned to the version being read (a git ref becomes its commit) and the relative paths of its
    documentation files. Every batch then reads that pinned location, so one run indexes one version."""
    opened = open_location(location)
    return opened.pin(), opened.list()


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def index_batch(location: str, relative_paths: list[str], *, components, strategy: ChunkingStrategy, source: str,
                base_url: str | None = None) -> dict:
    opened = open_location(location)
    documents = [opened.load(relative, source=source, base_url=base_url) for relative in relative_paths]
    result = index_documents(
        documents, store=components.store, embeddings=components.embeddings, strategy=strategy, source=source,
        prune=False,
    )
    return result.to_dict()


def prune_and_finalize(relative_paths: list[str], *, components, source: str) -> dict:
    """Delete what the source no longer has, then refresh the store's derived statistics."""
    store = components.store
    store.ensure_collection(components.embeddings.dimension)
    documents, chunks = prune_documents(store, scope=f"{source}:", keep={f"{source}:{p}" for p in relative_paths})
    invalidated = invalidate_answers(store, answers_source=components.settings.answers_source)
    store.finalize_writes()
    return {"documents_pruned": documents, "chunks_deleted": chunks, "answers_invalidated": invalidated}


def components_for(collection: str | None):
    """Components from settings, optionally writing to another collection (another chunking experiment)."""
    from askflow.bootstrap import bootstrap
    from askflow.config import Settings

    return bootstrap(Settings(**({"collection": collection} if collection else {})))


def index_slack_channel(channel: str, *, components, strategy: ChunkingStrategy, source: str = "slack") -> dict:
    from askflow.ingest.slack import load_channel_threads, slack_client

    settings = components.settings
    if settings.slack_bot_token is None:
        from askflow.domain.errors import ConfigurationError

        raise ConfigurationError("ASKFLOW_SLACK_BOT_TOKEN is needed to read Slack channels")
    client = slack_client(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url)
    documents = load_channel_threads(client, channel, source=source)
    return index_documents(
        documents, store=components.store, embeddings=components.embeddings, strategy=strategy, source=source,
        scope=f"{source}:{channel}/", answers_source=settings.answers_source,
    ).to_dict()


def index_github_repo(repo: str, *, components, strategy: ChunkingStrategy, source: str = "github") -> dict:
    from askflow.ingest.github_issues import github_client, load_repo_issues

    settings = components.settings
    token = settings.github_token.get_secret_value() if settings.github_token else None
    documents = load_repo_issues(github_client(base_url=settings.github_api_url, token=token), repo, source=source)
    return index_documents(
        documents, store=components.store, embeddings=components.embeddings, strategy=strategy, source=source,
        scope=f"{source}:{repo}/", answers_source=settings.answers_source,
    ).to_dict()
