"""pgvector's keyword statistics ({collection}_lexemes) kept by every write: always equal to a full recount."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from askflow.domain.model import Chunk, SourceKind

VOCABULARY = [f"word{i}" for i in range(40)]


def _chunk(doc_id: str, index: int, content: str, sha: str = "v1", metadata: dict | None = None) -> Chunk:
    return Chunk(doc_id=doc_id, index=index, content=content, title=doc_id.split(":")[1], section="Intro",
                 url=f"https://example.org/{doc_id}", sha=sha, kind=SourceKind.DOCS, metadata=metadata or {})


def _document(doc_id: str, texts: list[str], sha: str = "v1") -> list[Chunk]:
    return [_chunk(doc_id, i, text, sha) for i, text in enumerate(texts)]


def _vectors(chunks: list[Chunk]) -> list[list[float]]:
    return [[1.0, 0.0, 0.0, 0.0]] * len(chunks)


def _kept(pg_url: str, collection: str) -> dict[str, int]:
    """The statistics as stored, less the words no chunk holds any more (search ignores them)."""
    with psycopg.connect(pg_url) as conn:
        return dict(conn.execute(f'SELECT word, ndoc FROM "{collection}_lexemes" WHERE ndoc > 0').fetchall())


def _recount(pg_url: str, collection: str) -> dict[str, int]:
    """A full recomputation: ts_stat over the whole table, and the number of chunks under the empty word."""
    with psycopg.connect(pg_url) as conn:
        words = dict(conn.execute(f"SELECT word, ndoc FROM ts_stat('SELECT tsv FROM \"{collection}\"')").fetchall())
        (total,) = conn.execute(f'SELECT count(*) FROM "{collection}"').fetchone()
    return {**words, "": total} if total else words


@pytest.fixture
def store(pg_url, collection_name):
    from askflow.adapters.pgvector_store import PgVectorStore

    adapter = PgVectorStore(url=pg_url, collection=collection_name)
    adapter.ensure_collection(4)
    yield adapter
    adapter.close()


def test_upsert_alone_leaves_exact_statistics(store, pg_url, collection_name):
    chunks = _document("docs:a.md", ["Sensors wait for a file.", "Deferrable operators wait too."])
    store.upsert(chunks, _vectors(chunks))  # no finalize_writes: the statistics are already current
    assert _kept(pg_url, collection_name)[""] == 2
    assert _kept(pg_url, collection_name) == _recount(pg_url, collection_name)
    assert store.keyword_search("deferrable", limit=3, audiences=None)[0].chunk.chunk_id == chunks[1].chunk_id


def test_statistics_follow_upserts_reupserts_deletes_and_updates(store, pg_url, collection_name):
    a = _document("docs:a.md", ["Sensors wait for an external event.", "Pools limit concurrency of tasks."])
    b = _document("docs:b.md", ["XComs pass small values between tasks."])
    c = _document("slack:c", ["Use pools to limit concurrency.", "Sensors poke.", "Tasks retry."])
    store.upsert(a + b, _vectors(a + b))
    store.upsert(c, _vectors(c))
    assert _kept(pg_url, collection_name) == _recount(pg_url, collection_name)

    store.upsert(a + c, _vectors(a + c))  # the same chunks again: counted once
    counts = _kept(pg_url, collection_name)
    assert counts[""] == 6
    assert counts["pool"] == 2
    assert counts == _recount(pg_url, collection_name)

    assert store.delete_documents(["docs:b.md", "docs:missing.md"]) == 1
    assert "xcom" not in _kept(pg_url, collection_name)
    assert _kept(pg_url, collection_name) == _recount(pg_url, collection_name)

    # a document update, as indexing does it: the old chunks deleted, the new version's chunks written
    a2 = _document("docs:a.md", ["Sensors wait for an external event.", "Triggers run in the triggerer."], sha="v2")
    assert store.delete_documents(["docs:a.md"]) == 2
    store.upsert(a2, _vectors(a2))
    counts = _kept(pg_url, collection_name)
    assert counts[""] == 5
    assert counts["pool"] == 1
    assert counts["trigger"] == 1
    assert counts == _recount(pg_url, collection_name)

    assert store.delete_documents(["docs:a.md", "slack:c"]) == 5
    assert _kept(pg_url, collection_name) == {}
    assert _recount(pg_url, collection_name) == {}


def test_re_upsert_updates_what_the_id_does_not_name(store, pg_url, collection_name):
    first = [_chunk("answers:r1", 0, "Use a pool.", metadata={"cited": "v1"})]
    again = [_chunk("answers:r1", 0, "Use a pool.", metadata={"cited": "v2"})]
    store.upsert(first, _vectors(first))
    store.upsert(again, [[0.0, 1.0, 0.0, 0.0]])
    assert store.document_chunks("answers:r1", audiences=None) == again
    assert store.vector_search([0.0, 1.0, 0.0, 0.0], limit=1)[0].score == pytest.approx(1.0)
    assert _kept(pg_url, collection_name) == _recount(pg_url, collection_name)


def test_concurrent_writers_end_with_exact_counts(pg_url, collection_name):
    """Two writers on their own connections, batches sharing words in different orders: no deadlock, no count lost."""
    from askflow.adapters.pgvector_store import PgVectorStore

    def write(name: str) -> None:
        rng = random.Random(name)
        writer = PgVectorStore(url=pg_url, collection=collection_name, pool_size=1)
        writer.ensure_collection(4)
        try:
            for batch in range(12):
                chunks = [
                    chunk
                    for doc in range(4)
                    for chunk in _document(f"docs:{name}-{batch}-{doc}.md",
                                           [" ".join(rng.sample(VOCABULARY, 12)) for _ in range(3)])
                ]
                writer.upsert(chunks, _vectors(chunks))
                if batch % 3 == 2:
                    writer.delete_documents([f"docs:{name}-{batch - 1}-{doc}.md" for doc in range(4)])
        finally:
            writer.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(write, "left"), pool.submit(write, "right")]:
            done.result()  # raises a deadlock or any other failure of either writer

    counts = _kept(pg_url, collection_name)
    assert counts[""] == 2 * (12 - 4) * 4 * 3
    assert counts == _recount(pg_url, collection_name)


def test_a_table_without_statistics_is_counted_once_when_opened(store, pg_url, collection_name):
    """A table written before the statistics were kept by every write (or whose statistics were lost)."""
    from askflow.adapters.pgvector_store import PgVectorStore

    chunks = _document("docs:a.md", ["Sensors wait.", "Pools limit concurrency."])
    store.upsert(chunks, _vectors(chunks))
    with psycopg.connect(pg_url) as conn:
        conn.execute(f'DELETE FROM "{collection_name}_lexemes"')
    reopened = PgVectorStore(url=pg_url, collection=collection_name)
    reopened.ensure_collection(4)
    assert _kept(pg_url, collection_name)[""] == 2
    assert _kept(pg_url, collection_name) == _recount(pg_url, collection_name)
    more = _document("docs:b.md", ["Pools again."])
    reopened.upsert(more, _vectors(more))
    assert _kept(pg_url, collection_name)["pool"] == 2
    assert _kept(pg_url, collection_name) == _recount(pg_url, collection_name)
    reopened.close()


def test_rebuild_repairs_statistics_and_drops_words_no_chunk_holds(store, pg_url, collection_name):
    chunks = _document("docs:a.md", ["Sensors wait.", "Pools limit concurrency."])
    store.upsert(chunks, _vectors(chunks))
    store.delete_documents(["docs:a.md"])
    kept = _document("docs:b.md", ["Pools again."])
    store.upsert(kept, _vectors(kept))
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"UPDATE \"{collection_name}_lexemes\" SET ndoc = 99 WHERE word = 'pool'")
    store.rebuild_keyword_statistics()
    with psycopg.connect(pg_url) as conn:
        stored = dict(conn.execute(f'SELECT word, ndoc FROM "{collection_name}_lexemes"').fetchall())
    assert stored == _recount(pg_url, collection_name)
    assert stored["pool"] == 1
    assert "sensor" not in stored
