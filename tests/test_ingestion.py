"""Loading, section-aware chunking and incremental indexing into the real pgvector store."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.errors import InvalidInput
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths, parse_document
from askflow.ingest.sources.locations import load_locations
from tests.support.git_repo import commit, git


def open_location(spec: str, cache_dir=None):
    """A location as the CLI and the DAGs open it."""
    return bootstrap(Settings()).location(spec, cache_dir=cache_dir)

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
    hits = store.keyword_search("backfill", limit=5, audiences=None)
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


def test_git_location_reads_the_pinned_commit_of_a_ref(git_docs, tmp_path):
    location = open_location(f"git+{git_docs.as_uri()}@main#subdirectory=docs", cache_dir=tmp_path / "cache")
    pinned = location.pin()
    first_commit = git(git_docs, "rev-parse", "HEAD")
    assert pinned == f"git+{git_docs.as_uri()}@{first_commit}#subdirectory=docs"
    assert location.list() == ["guides/connections.html", "scheduling.md", "xcoms.rst"]  # README.md is outside docs/

    (git_docs / "docs" / "xcoms.rst").unlink()
    (git_docs / "docs" / "new.md").write_text("# New page\n\nFresh words.\n")
    second_commit = commit(git_docs, "second")

    same_version = open_location(pinned, cache_dir=tmp_path / "cache")  # what every batch of a run opens
    assert same_version.list() == ["guides/connections.html", "scheduling.md", "xcoms.rst"]
    document = same_version.load("xcoms.rst", source="docs", base_url=None)
    assert document.doc_id == "docs:xcoms.rst" and document.title == "XComs"
    assert document.url == f"{git_docs.as_uri()}@{first_commit}#docs/xcoms.rst"

    latest = open_location(f"git+{git_docs.as_uri()}@main#subdirectory=docs", cache_dir=tmp_path / "cache")
    assert latest.pin().endswith(f"@{second_commit}#subdirectory=docs")
    assert latest.list() == ["guides/connections.html", "new.md", "scheduling.md"]
    assert latest.load("new.md", source="docs", base_url="https://docs.example.org").url == \
        "https://docs.example.org/new.md"


@pytest.mark.parametrize(("spec", "message"), [
    ("git+{repo}@no-such-branch", "couldn't find remote ref no-such-branch"),
    ("git+{repo}#subdirectory=nowhere", "no folder 'nowhere'"),
    ("git+{repo}#egg=docs", "#subdirectory=DIR"),
    ("git+file:///no/such/repository", "cannot fetch"),
    ("gs://", "no bucket"),
])
def test_bad_locations_are_invalid_input(git_docs, tmp_path, spec, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        location = open_location(spec.format(repo=git_docs.as_uri()), cache_dir=tmp_path / "cache")
        location.list()


def test_gcs_location_lists_a_prefix_and_loads_its_documents(gcs_server):
    from google.cloud import storage

    bucket = storage.Client().create_bucket(f"docs-{uuid.uuid4().hex[:8]}")
    for path in DOCS.rglob("*"):
        if path.is_file():
            bucket.blob(f"site/{path.relative_to(DOCS).as_posix()}").upload_from_filename(path)
    bucket.blob("site/logo.png").upload_from_string(b"\x89PNG")
    bucket.blob("site-old/xcoms.rst").upload_from_string("Old\n===\n")  # shares the prefix's letters, not its folder

    location = open_location(f"gs://{bucket.name}/site")
    assert location.list() == ["guides/connections.html", "scheduling.md", "xcoms.rst"]
    html = location.load("guides/connections.html", source="web", base_url=None)
    assert html.doc_id == "web:guides/connections.html" and html.title == "Managing Connections"
    assert html.url == f"gs://{bucket.name}/site/guides/connections.html"
    documents = load_locations([f"gs://{bucket.name}/site/"], open_location=open_location, source="web",
                               base_url="https://docs.example.org/")
    assert [d.url for d in documents][-1] == "https://docs.example.org/xcoms.rst"

    with pytest.raises(InvalidInput, match="no such bucket"):
        open_location(f"gs://missing-{uuid.uuid4().hex[:8]}/docs").list()


def test_git_credentials_never_reach_links_or_errors(tmp_path):
    location = open_location("git+https://x-access-token:s3cr3t@127.0.0.1:9/org/docs.git@main", cache_dir=tmp_path)
    with pytest.raises(InvalidInput) as raised:
        location.list()
    assert "s3cr3t" not in str(raised.value) and raised.value.__cause__ is None
    assert "https://127.0.0.1:9/org/docs.git" in str(raised.value)
    assert open_location("git+https://x-access-token:s3cr3t@github.com/o/r.git@main#subdirectory=d").public == \
        "git+https://github.com/o/r.git@main#subdirectory=d"
