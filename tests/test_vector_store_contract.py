"""One contract for every vector store adapter: pgvector always, Weaviate when WEAVIATE_URL points at one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from types import SimpleNamespace

import pytest

from askflow.domain.model import Chunk, Provenance, SourceKind


def _chunk(doc_id: str, index: int, content: str, sha: str = "v1") -> Chunk:
    return Chunk(doc_id=doc_id, index=index, content=content, title=doc_id.split(":")[1], section="Intro",
                 url=f"https://example.org/{doc_id}", sha=sha, kind=SourceKind.DOCS, metadata={"lang": "en"})


@pytest.fixture(params=["pgvector", "weaviate"])
def store(request, collection_name):
    if request.param == "pgvector":
        from askflow.adapters.pgvector_store import PgVectorStore

        adapter = PgVectorStore(url=request.getfixturevalue("pg_url"), collection=collection_name)
    else:
        url = os.environ.get("WEAVIATE_URL")
        if not url:
            pytest.skip("WEAVIATE_URL is not set: no Weaviate server reachable from this machine")
        from askflow.adapters.weaviate_store import WeaviateVectorStore

        adapter = WeaviateVectorStore(url=url, api_key=os.environ.get("WEAVIATE_API_KEY"), collection=collection_name)
    adapter.ensure_collection(4)
    adapter.ensure_collection(4)  # idempotent
    yield adapter
    adapter.close()


CHUNKS = [
    _chunk("docs:a.md", 0, "Sensors wait for an external event such as a file landing in a bucket."),
    _chunk("docs:a.md", 1, "Deferrable operators release their worker slot while they wait."),
    _chunk("docs:b.md", 0, "XComs pass small values between tasks."),
    _chunk("slack:c", 0, "Use pools to limit concurrency on a shared resource."),
]
VECTORS = [[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]


def test_upsert_is_idempotent_by_deterministic_ids(store):
    assert store.upsert(CHUNKS, VECTORS) == 4
    store.upsert(CHUNKS, VECTORS)
    assert store.count() == 4


def test_hybrid_search_by_keywords_and_by_vector(store):
    store.upsert(CHUNKS, VECTORS)
    store.finalize_writes()
    by_keyword = store.hybrid_search("pools concurrency", [0.5, 0.5, 0.5, 0.5], limit=2, alpha=0.0, audiences=None)
    assert by_keyword[0].chunk.doc_id == "slack:c"
    by_vector = store.hybrid_search("unrelated words", [0, 1, 0, 0], limit=2, alpha=1.0, audiences=None)
    assert by_vector[0].chunk.doc_id == "docs:b.md"
    fused = store.hybrid_search("deferrable worker slot", [1, 0, 0, 0], limit=4, alpha=0.5, audiences=None)
    assert {fused[0].chunk.chunk_id, fused[1].chunk.chunk_id} == {CHUNKS[0].chunk_id, CHUNKS[1].chunk_id}
    assert fused[0].score >= fused[-1].score
    hit = fused[0].chunk
    assert hit.url.startswith("https://example.org/") and hit.section == "Intro" and hit.metadata == {"lang": "en"}


def test_keyword_search_alone(store):
    store.upsert(CHUNKS, VECTORS)
    store.finalize_writes()
    found = store.keyword_search("how do pools limit concurrency", limit=3, audiences=None)
    assert found[0].chunk.doc_id == "slack:c"
    assert all(sc.chunk.chunk_id != CHUNKS[2].chunk_id for sc in found)  # shares no word with the query
    assert store.keyword_search("zeppelin", limit=3, audiences=None) == []


def test_fingerprints_by_source_prefix_and_delete_by_document(store):
    store.upsert(CHUNKS, VECTORS)
    assert store.document_fingerprints("docs:") == {"docs:a.md": "v1", "docs:b.md": "v1"}
    assert store.delete_documents(["docs:a.md"]) == 2
    assert store.count() == 2
    assert store.delete_documents([]) == 0
    assert set(store.document_fingerprints("")) == {"docs:b.md", "slack:c"}
    assert store.document_metadata("slack:") == {"slack:c": {"lang": "en"}}


def test_every_chunk_can_be_read_back_page_by_page(store):
    store.upsert(CHUNKS, VECTORS)
    pages, after = [], None
    while page := store.chunks(after=after, limit=3):
        pages.append(page)
        after = page[-1].chunk_id
    assert [len(page) for page in pages] == [3, 1]
    read = [chunk for page in pages for chunk in page]
    assert sorted(c.chunk_id for c in read) == sorted(c.chunk_id for c in CHUNKS)
    assert {c.chunk_id: c for c in read}[CHUNKS[3].chunk_id] == CHUNKS[3]


def test_a_document_is_read_back_whole_in_its_order(store):
    store.upsert(list(reversed(CHUNKS)), list(reversed(VECTORS)))
    assert store.document_chunks("docs:a.md", audiences=None) == [CHUNKS[0], CHUNKS[1]]
    assert store.document_chunks("docs:missing.md", audiences=None) == []


def test_fingerprints_by_document_id(store):
    store.upsert(CHUNKS, VECTORS)
    assert store.fingerprints(["docs:a.md", "slack:c", "docs:missing.md"]) == {"docs:a.md": "v1", "slack:c": "v1"}
    assert store.fingerprints([]) == {}


def test_pgvector_keyword_search_selects_rows_by_the_rarest_words_within_its_budget(pg_url, collection_name):
    from askflow.adapters.pgvector_store import PgVectorStore

    common = [_chunk(f"docs:common{i}.md", 0, f"Every task of this DAG runs daily, number {i}.") for i in range(6)]
    rare = [_chunk("docs:rare.md", 0, "A task killed by SIGSEGV in the DAG."),
            _chunk("docs:rarer.md", 0, "SIGSEGV again.")]
    chunks = common + rare
    vectors = [[1, 0, 0, 0]] * len(chunks)
    unbounded = PgVectorStore(url=pg_url, collection=collection_name)
    unbounded.ensure_collection(4)
    unbounded.upsert(chunks, vectors)
    unbounded.finalize_writes()
    query = "why is my DAG task killed with SIGSEGV"
    everything = unbounded.keyword_search(query, limit=10, audiences=None)
    assert len(everything) == len(chunks)  # "task" and "dag" alone match every row

    bounded = PgVectorStore(url=pg_url, collection=collection_name, keyword_rows=3)
    selected = bounded.keyword_search(query, limit=10, audiences=None)
    # "sigsegv" (2 rows) and "kill" (1 row) fit the budget of 3 rows; "task" and "dag" only add to the score
    assert [sc.chunk.doc_id for sc in selected] == ["docs:rare.md", "docs:rarer.md"]
    assert [sc.chunk.doc_id for sc in everything[:2]] == ["docs:rare.md", "docs:rarer.md"]
    assert selected[0].score == pytest.approx(everything[0].score)
    unbounded.close()
    bounded.close()


def test_pgvector_refuses_a_model_of_another_dimension_on_an_existing_collection(pg_url, collection_name):
    from askflow.adapters.pgvector_store import PgVectorStore
    from askflow.domain.errors import ConfigurationError

    store = PgVectorStore(url=pg_url, collection=collection_name)
    store.ensure_collection(4)
    with pytest.raises(ConfigurationError, match="holds 4-dimension vectors .* makes 8: set ASKFLOW_COLLECTION"):
        store.ensure_collection(8)
    store.close()


def test_pgvector_keeps_a_chunks_vector_and_keyword_text_in_its_row_and_moves_an_older_table_to_that(
        pg_url, collection_name):
    """A search filtered to a small audience reads the vectors and keyword text of every row it admits: out of line
    (TOAST, the vector type's default once a row passes 2 kB) each is one more index lookup and page per row. A
    768-dimension chunk of a page's length stays whole in its row; a table made before takes the layout for the
    rows written from then on, and a table that has it is not altered again (an ALTER TABLE locks it)."""
    import psycopg

    from askflow.adapters.pgvector_store import PgVectorStore

    table = f'"{collection_name}"'
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the layout a collection was made with before
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, doc_id text NOT NULL, chunk_index integer NOT NULL,"
                     " content text NOT NULL, title text NOT NULL DEFAULT '', section text NOT NULL DEFAULT '',"
                     " url text NOT NULL DEFAULT '', sha text NOT NULL, kind text NOT NULL,"
                     " metadata jsonb NOT NULL DEFAULT '{}', embedding vector(768) NOT NULL, tsv tsvector GENERATED"
                     " ALWAYS AS (setweight(to_tsvector('english', title || ' ' || section), 'A')"
                     " || to_tsvector('english', content)) STORED)")
    store = PgVectorStore(url=pg_url, collection=collection_name)
    store.ensure_collection(768)
    words = " ".join(f"word{i}" for i in range(150))  # about 1,200 characters, 150 distinct lexemes
    store.upsert([_chunk("docs:long.md", 0, words)], [[0.01 * (i % 7) + 0.001 for i in range(768)]])
    with psycopg.connect(pg_url) as conn:
        out_of_line = conn.execute(
            f"SELECT pg_column_toast_chunk_id(embedding), pg_column_toast_chunk_id(tsv) FROM {table}").fetchone()
    assert out_of_line == (None, None)
    catalog = ("SELECT a.xmin::text, c.xmin::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
               f" WHERE a.attrelid = '{table}'::regclass AND a.attname = 'embedding'")
    with psycopg.connect(pg_url) as conn:
        before = conn.execute(catalog).fetchone()
    store.ensure_collection(768)  # every process start: the layout holds, so nothing is altered again
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(catalog).fetchone() == before
    found = store.vector_search([0.01 * (i % 7) + 0.001 for i in range(768)], limit=1, audiences=None)
    assert found[0].chunk.content == words and found[0].score > 0.99
    store.close()


def test_a_chunks_context_is_stored_read_back_and_searched_by_keywords_with_it(store):
    store.upsert(CHUNKS, VECTORS)
    store.finalize_writes()
    assert store.keyword_search("kubernetes", limit=3, audiences=None) == []
    placed = dataclasses.replace(CHUNKS[2], context="The XCom page of the Kubernetes executor guide.")
    store.upsert([placed], [VECTORS[2]])  # the same chunk (its id), now with its context
    store.finalize_writes()
    assert store.count() == 4
    assert store.document_chunks("docs:b.md", audiences=None) == [placed]
    assert [hit.chunk for hit in store.keyword_search("kubernetes executor", limit=3, audiences=None)] == [placed]

    replaced = dataclasses.replace(placed, context="Written for the Celery executor.")
    store.upsert([replaced], [VECTORS[2]])
    store.finalize_writes()
    assert store.keyword_search("kubernetes", limit=3, audiences=None) == []  # the old context's words are gone
    assert [hit.chunk for hit in store.keyword_search("celery", limit=3, audiences=None)] == [replaced]
    read = {chunk.chunk_id: chunk for chunk in store.chunks(after=None, limit=10)}
    assert read[replaced.chunk_id].context == "Written for the Celery executor."


def test_pgvector_keeps_the_keyword_statistics_exact_when_a_context_changes(pg_url, collection_name):
    from askflow.adapters.pgvector_store import PgVectorStore

    store = PgVectorStore(url=pg_url, collection=collection_name)
    store.ensure_collection(4)
    store.upsert(CHUNKS, VECTORS)
    store.upsert([dataclasses.replace(CHUNKS[0], context="Sensors of the Kubernetes executor.")], [VECTORS[0]])
    store.upsert([dataclasses.replace(CHUNKS[0], context="Sensors of the Celery executor.")], [VECTORS[0]])
    store.upsert([dataclasses.replace(CHUNKS[0], context="Sensors of the Celery executor.")], [VECTORS[0]])
    statistics = f'SELECT word, ndoc FROM "{collection_name}_lexemes" WHERE ndoc > 0 ORDER BY word'
    with store._connections().connection() as conn:
        adjusted = conn.execute(statistics).fetchall()
    store.rebuild_keyword_statistics()
    with store._connections().connection() as conn:
        assert adjusted == conn.execute(statistics).fetchall()
    assert dict(adjusted)["celeri"] == 1 and "kubernet" not in dict(adjusted)
    store.close()


def test_pgvector_adds_contexts_to_a_collection_made_before_them(pg_url, collection_name):
    import psycopg

    from askflow.adapters.pgvector_store import PgVectorStore

    with psycopg.connect(pg_url, autocommit=True) as conn:  # the table as it was made before contexts
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(f"""CREATE TABLE "{collection_name}" (id uuid PRIMARY KEY, doc_id text NOT NULL,
            chunk_index integer NOT NULL, content text NOT NULL, title text NOT NULL DEFAULT '',
            section text NOT NULL DEFAULT '', url text NOT NULL DEFAULT '', sha text NOT NULL, kind text NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}', audiences text[], embedding vector(4) NOT NULL,
            tsv tsvector GENERATED ALWAYS AS (setweight(to_tsvector('english', title || ' ' || section), 'A')
                || to_tsvector('english', content)) STORED)""")
        conn.execute(f"""INSERT INTO "{collection_name}" (id, doc_id, chunk_index, content, title, section, url, sha,
            kind, metadata, audiences, embedding) VALUES ('{CHUNKS[3].chunk_id}', 'slack:c', 0,
            '{CHUNKS[3].content}', 'c', 'Intro', 'https://example.org/slack:c', 'v1', 'docs', '{{"lang": "en"}}',
            '{{public}}', '[0, 0, 1, 0]')""")
    store = PgVectorStore(url=pg_url, collection=collection_name)
    store.ensure_collection(4)
    assert store.document_chunks("slack:c", audiences=None) == [CHUNKS[3]]
    assert store.keyword_search("pools", limit=3, audiences=None)[0].chunk == CHUNKS[3]
    placed = dataclasses.replace(CHUNKS[3], context="From the channel about scheduler tuning.")
    store.upsert([placed], [VECTORS[3]])
    assert store.keyword_search("scheduler tuning", limit=3, audiences=None)[0].chunk == placed
    assert placed.provenance is None  # stored before lineage: none, until its document is written again
    traced = dataclasses.replace(placed, provenance=PROVENANCE)
    store.upsert([traced], [VECTORS[3]])
    assert store.document_chunks("slack:c", audiences=None) == [traced]
    store.close()


PROVENANCE = Provenance(location="git+https://example.org/docs.git@main", version="commit 0a1b2c3",
                        ingested_at=dt.datetime(2026, 11, 30, 8, 15, 0, 123000, tzinfo=dt.UTC),
                        run="airflow:askflow_ingest_docs/manual__2026-11-30/index[2]")


def test_a_chunks_provenance_is_stored_and_read_back_wherever_it_is_found(store):
    traced = [dataclasses.replace(chunk, provenance=PROVENANCE) for chunk in CHUNKS[:3]]
    store.upsert([*traced, CHUNKS[3]], VECTORS)
    store.finalize_writes()
    assert store.document_chunks("docs:a.md", audiences=None) == traced[:2]
    assert store.document_chunks("slack:c", audiences=None)[0].provenance is None  # written with none
    found = store.hybrid_search("XComs values between tasks", VECTORS[2], limit=1, alpha=0.5, audiences=None)
    assert found[0].chunk.provenance == PROVENANCE
    assert store.keyword_search("deferrable", limit=1, audiences=None)[0].chunk.provenance == PROVENANCE
    paged = {chunk.chunk_id: chunk.provenance for chunk in store.chunks(after=None, limit=10)}
    assert paged[traced[2].chunk_id] == PROVENANCE
    # a chunk written again as it was read (a context placed in it) keeps its provenance; a new run's replaces it
    placed = dataclasses.replace(store.document_chunks("docs:b.md", audiences=None)[0], context="The XCom page.")
    store.upsert([placed], [VECTORS[2]])
    assert store.document_chunks("docs:b.md", audiences=None)[0].provenance == PROVENANCE
    later = dataclasses.replace(PROVENANCE, version="commit 9f8e7d6", run="cli:20261201T000000Z-0badc0de",
                                ingested_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    store.upsert([dataclasses.replace(placed, provenance=later)], [VECTORS[2]])
    assert store.document_chunks("docs:b.md", audiences=None)[0].provenance == later


def test_the_weaviate_adapter_stores_provenance_as_properties_and_adds_them_to_an_older_collection():
    from askflow.adapters.weaviate_store import WeaviateVectorStore, _chunk, _properties

    traced = dataclasses.replace(CHUNKS[0], provenance=PROVENANCE)
    properties = _properties(traced)
    assert {key: properties[key] for key in ("source_location", "source_version", "ingested_at", "ingest_run")} == {
        "source_location": PROVENANCE.location, "source_version": "commit 0a1b2c3",
        "ingested_at": "2026-11-30T08:15:00.123000+00:00", "ingest_run": PROVENANCE.run}
    assert _chunk(properties) == traced
    assert "ingest_run" not in _properties(CHUNKS[0]) and _chunk(_properties(CHUNKS[0])).provenance is None

    added: list[str] = []
    old = [SimpleNamespace(name=name) for name in ("content", "source", "audiences", "context")]
    collection = SimpleNamespace(config=SimpleNamespace(get=lambda: SimpleNamespace(properties=old),
                                                        add_property=lambda p: added.append(p.name)))
    client = SimpleNamespace(collections=SimpleNamespace(exists=lambda name: True, get=lambda name: collection))
    store = WeaviateVectorStore(url="http://127.0.0.1:1", api_key=None, collection="c")
    store._connected = lambda: client
    store.ensure_collection(4)
    assert added == ["source_location", "source_version", "ingested_at", "ingest_run"]
