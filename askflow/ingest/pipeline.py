"""Ingestion as steps an orchestrator can map and retry: list, index a batch, prune. ``askflow ingest`` runs the
same indexing in one call; the DAGs run these steps so each batch retries on its own and only references (relative
paths) travel between tasks."""

from __future__ import annotations

from pathlib import Path

from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents, invalidate_answers, prune_documents
from askflow.ingest.loaders import DOC_SUFFIXES, load_file


def list_documents(root: Path) -> list[str]:
    """Relative paths of the documentation files under ``root``."""
    root = Path(root)
    if not root.is_dir():
        from askflow.domain.errors import InvalidInput

        raise InvalidInput(f"no such folder: {root}")
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in DOC_SUFFIXES and not any(s.startswith(".") for s in p.parts)
    )


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def index_batch(root: Path, relative_paths: list[str], *, components, strategy: ChunkingStrategy, source: str,
                base_url: str | None = None) -> dict:
    documents = [load_file(Path(root) / relative, relative, source, base_url) for relative in relative_paths]
    result = index_documents(
        documents, store=components.store, embeddings=components.embeddings, strategy=strategy, source=source,
        prune=False,
    )
    return result.to_dict()


def prune_and_finalize(relative_paths: list[str], *, components, source: str) -> dict:
    """Delete what the source no longer has, then refresh the store's derived statistics."""
    store = components.store
    store.ensure_collection(components.embeddings.dimension)
    documents, chunks = prune_documents(store, source=source, keep={f"{source}:{p}" for p in relative_paths})
    invalidated = invalidate_answers(store, answers_source=components.settings.answers_source)
    store.finalize_writes()
    return {"documents_pruned": documents, "chunks_deleted": chunks, "answers_invalidated": invalidated}
