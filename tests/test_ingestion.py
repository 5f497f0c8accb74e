"""Loading, section-aware chunking and incremental indexing into the real pgvector store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.domain.errors import InvalidInput
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.ingest.loaders import load_paths, parse_document

DOCS = Path(__file__).parent / "data" / "docs"


def test_loaders_parse_rst_markdown_front_matter_and_html():
    documents = {d.doc_id: d for d in load_paths([DOCS], source="docs", base_url="https://docs.example.org")}
    assert set(documents) == {"docs:xcoms.rst", "docs:scheduling.md", "docs:guides/connections.html"}
    assert documents["docs:xcoms.rst"].title == "XComs"
    assert documents["docs:scheduling.md"].title == "Scheduling DAG runs"  # front matter wins
    assert not documents["docs:scheduling.md"].text.startswith("---")
    html = documents["docs:guides/connections.html"]
    assert html.title == "Managing Connections"
    assert "## Environment variables" in html.text and "```" in html.text
    assert html.url == "https://docs.example.org/guides/connections.html"


def test_section_chunks_keep_heading_paths_and_whole_code_blocks():
    document = parse_document("xcoms.rst", (DOCS / "xcoms.rst").read_text(), source="docs", url="u")
    chunks = ChunkingStrategy(chunk_size=300, chunk_overlap=0).split(document, "sha")
    sections = [c.section for c in chunks]
    assert "Pushing and pulling" in sections and "Custom backends" in sections
    code = next(c for c in chunks if ".. code-block:: python" in c.content)
    assert "ti.xcom_push(key=\"answer\", value=42)" in code.content  # the block was not cut in half
    assert code.embedding_text.startswith("XComs > Pushing and pulling")


def test_nested_rst_sections_and_oversized_blocks():
    text = "Title\n=====\n\nintro\n\nPart\n----\n\nSub\n~~~\n\n" + ("word " * 400) + "\n\nBack\n----\n\nend\n"
    document = parse_document("page.rst", text, source="docs", url="u")
    chunks = ChunkingStrategy(chunk_size=500, chunk_overlap=50).split(document, "sha")
    assert {c.section for c in chunks} == {"", "Part > Sub", "Back"}
    assert all(len(c.content) <= 500 for c in chunks)


def test_strategy_is_validated():
    with pytest.raises(ValueError, match="unknown splitter"):
        ChunkingStrategy(splitter="words")
    with pytest.raises(ValueError, match="chunk_overlap"):
        ChunkingStrategy(chunk_size=100, chunk_overlap=100)


def test_missing_path_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="no such file"):
        load_paths([tmp_path / "missing"])


def test_incremental_indexing_skips_updates_prunes_and_follows_the_strategy(
    pg_url, collection_name, hash_embeddings, tmp_path
):
    corpus = tmp_path / "corpus"
    shutil.copytree(DOCS, corpus)
    store = PgVectorStore(url=pg_url, collection=collection_name)
    strategy = ChunkingStrategy()

    def run(strategy=strategy):
        return index_documents(load_paths([corpus], source="docs"), store=store, embeddings=hash_embeddings,
                               strategy=strategy, source="docs")

    first = run()
    assert first.documents_written == 3 and first.chunks_written == store.count() > 0
    embedded = len(hash_embeddings.embedded)

    second = run()
    assert second.documents_skipped == 3 and second.chunks_written == 0 and second.chunks_deleted == 0
    assert len(hash_embeddings.embedded) == embedded  # nothing re-embedded

    (corpus / "scheduling.md").write_text((corpus / "scheduling.md").read_text() + "\n\nBackfill re-runs intervals.\n")
    third = run()
    assert third.documents_written == 1 and third.documents_skipped == 2
    hits = store.keyword_search("backfill", limit=5)
    assert hits and hits[0].chunk.doc_id == "docs:scheduling.md"

    (corpus / "xcoms.rst").unlink()
    fourth = run()
    assert fourth.documents_pruned == 1
    assert "docs:xcoms.rst" not in store.document_fingerprints("docs:")

    fifth = run(ChunkingStrategy(chunk_size=400, chunk_overlap=50))
    assert fifth.documents_written == 2  # a new strategy re-embeds what it affects

    # another source's run never prunes this one
    other = index_documents([], store=store, embeddings=hash_embeddings, strategy=strategy, source="slack")
    assert other.documents_pruned == 0 and len(store.document_fingerprints("docs:")) == 2
    store.close()
