"""Scale: retrieval latency and ask overhead of pgvector at 10k and 100k chunks (1M with ``--million``), with
synthetic clustered vectors and synthetic Zipf-distributed text; which HNSW ``ef_search`` holds recall@10 ≥ 0.95
against exact search; what the keyword search's row budget costs in top-10 overlap and saves in time; and what a
one-document update costs with the keyword statistics adjusted by the write against recounted over the table; and
hybrid search filtered to an audience admitting 1% of the chunks, drawn at random (``random1``) and away from the
queries' neighbourhood (``far1``: two clusters the queries are never drawn from), with how many lists came back full.
Prints one JSON object as its last line."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from _stack import summary_ms, temp_data_dir

DIM = 384
WORDS = np.array([f"term{i}" for i in range(50_000)])
# Zipf's law, as in real text: a few words occur in most chunks, most words in few.
WORD_P = 1.0 / np.arange(1, len(WORDS) + 1) ** 1.07
WORD_P /= WORD_P.sum()
KEYWORD_QUERIES = 20
UPDATE_ROUNDS = 5


FAR_CLUSTERS = (0, 1)  # of 200: the chunks of these two clusters (1%) are the "far" audience's


def synthetic(n: int, rng: np.random.Generator, centers: np.ndarray, *,
              clusters: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    vectors, texts, _ = labelled(n, rng, centers, clusters=clusters)
    return vectors, texts


def labelled(n: int, rng: np.random.Generator, centers: np.ndarray, *,
             clusters: np.ndarray | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    labels = rng.choice(clusters, n) if clusters is not None else rng.integers(0, len(centers), n)
    vectors = centers[labels] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(row) for row in WORDS[rng.choice(len(WORDS), size=(n, 60), p=WORD_P)]]
    return vectors.astype(np.float32), texts, labels


def audiences_of(labels: np.ndarray, rng: np.random.Generator) -> list[list[str]]:
    """Every chunk ``public``; 1% drawn at random also ``random1``; the two far clusters' chunks (1%) ``far1``."""
    drawn = rng.random(len(labels)) < 0.01
    return [["public", *(["random1"] if pick else []), *(["far1"] if label in FAR_CLUSTERS else [])]
            for label, pick in zip(labels, drawn, strict=True)]


def load(store, url: str, table: str, n: int, rng, centers) -> float:
    import psycopg
    from pgvector.psycopg import register_vector

    store.ensure_collection(DIM)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f'DROP INDEX IF EXISTS "{table}_embedding"')
        done = 0
        while done < n:
            batch = min(20000, n - done)
            vectors, texts, labels = labelled(batch, rng, centers)
            audiences = audiences_of(labels, rng)
            with conn.cursor().copy(
                f'COPY "{table}" (id, doc_id, chunk_index, content, sha, kind, audiences, embedding) FROM STDIN'
            ) as copy:
                for i in range(batch):
                    copy.write_row((f"00000000-0000-4000-8000-{done + i:012d}", f"synthetic:{(done + i) // 5}",
                                    (done + i) % 5, texts[i], "s", "docs", audiences[i], vectors[i]))
            done += batch
        conn.execute("SET maintenance_work_mem = '4GB'")  # the 1M graph (~2 GB) builds in memory
        conn.execute(f'CREATE INDEX "{table}_embedding" ON "{table}" USING hnsw (embedding vector_cosine_ops) '
                     "WITH (m = 16, ef_construction = 64)")
        conn.execute(f'ANALYZE "{table}"')
    store.rebuild_keyword_statistics()  # COPY went around the store, which counts what it writes
    return time.perf_counter() - started


def recall(url: str, table: str, queries: np.ndarray, ef_search: int) -> tuple[float, float]:
    import psycopg
    from pgvector.psycopg import register_vector

    hits, latencies = 0, []
    with psycopg.connect(url) as conn:
        register_vector(conn)
        for q in queries:
            conn.execute("SET enable_indexscan = off")
            exact = {r[0] for r in conn.execute(
                f'SELECT id FROM "{table}" ORDER BY embedding <=> %s LIMIT 10', (q,))}
            conn.execute("SET enable_indexscan = on")
            conn.execute(f"SET hnsw.ef_search = {ef_search}")
            started = time.perf_counter()
            approx = {r[0] for r in conn.execute(
                f'SELECT id FROM "{table}" ORDER BY embedding <=> %s LIMIT 10', (q,))}
            latencies.append((time.perf_counter() - started) * 1000)
            hits += len(exact & approx)
    return hits / (10 * len(queries)), float(np.median(latencies))


def keyword_budget(store, unbounded, texts: list[str]) -> dict:
    """Keyword search as configured (rows selected by the rarest query words within the row budget) against the
    same search ranking every matching row: latency of each, and how much of the exact top 10 the budget keeps."""
    bounded_ms, exact_ms, overlap = [], [], 0
    for text in texts:
        started = time.perf_counter()
        kept = {sc.chunk.chunk_id for sc in store.keyword_search(text, limit=10, audiences=None)}
        bounded_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        exact = {sc.chunk.chunk_id for sc in unbounded.keyword_search(text, limit=10, audiences=None)}
        exact_ms.append((time.perf_counter() - started) * 1000)
        overlap += len(kept & exact)
    unbounded.close()
    return {"with_row_budget": summary_ms(bounded_ms), "ranking_every_match": summary_ms(exact_ms),
            "overlap@10": round(overlap / (10 * len(texts)), 3)}


def document_update(store, url: str, table: str, rng, centers) -> dict:
    """Replace one document's five chunks as indexing does (delete, then upsert the new version): with the keyword
    statistics adjusted by those writes (now), and with those writes followed by the recount over the whole table
    that every batch paid before (``rebuild_keyword_statistics``, what ``finalize_writes`` ran). Rounds alternate
    the two; at the end the adjusted statistics are compared with a recount."""
    import psycopg

    from askflow.domain.model import Chunk

    timings: dict[str, list[float]] = {"incremental": [], "with_full_recount": []}
    for version in range(2 * UPDATE_ROUNDS):
        vectors, texts = synthetic(5, rng, centers)
        chunks = [Chunk(doc_id="synthetic:0", index=i, content=text, title="", section="", url="", sha=f"u{version}")
                  for i, text in enumerate(texts)]
        recount = version % 2 == 0
        started = time.perf_counter()
        store.delete_documents(["synthetic:0"])
        store.upsert(chunks, vectors)
        if recount:
            store.rebuild_keyword_statistics()
        timings["with_full_recount" if recount else "incremental"].append((time.perf_counter() - started) * 1000)
    with psycopg.connect(url) as conn:
        kept = set(conn.execute(f'SELECT word, ndoc FROM "{table}_lexemes" WHERE ndoc > 0'))
        counted = set(conn.execute(f"SELECT word, ndoc FROM ts_stat('SELECT tsv FROM \"{table}\"')"
                                   f' UNION ALL SELECT \'\', count(*) FROM "{table}"'))
    return {**{mode: summary_ms(values) for mode, values in timings.items()}, "statistics_exact": kept == counted}


def audience_search(store, queries: np.ndarray, texts: list[str], audience: str) -> dict:
    """Hybrid search (limit 40) admitting only ``audience``'s chunks: latency, and how full the lists are (the
    chunks the audience may read are far more than 40, so a full list is 40)."""
    latencies, sizes = [], []
    for q, text in zip(queries, texts, strict=True):
        started = time.perf_counter()
        found = store.hybrid_search(text, q, limit=40, alpha=0.5, audiences=[audience])
        latencies.append((time.perf_counter() - started) * 1000)
        sizes.append(len(found))
        assert all(audience in sc.chunk.audiences for sc in found)
    return {**summary_ms(latencies), "full_lists": sum(n == 40 for n in sizes), "queries": len(sizes),
            "min_results": min(sizes)}


def main(sizes: list[int]) -> dict:
    os.environ["ASKFLOW_DATA_DIR"] = str(temp_data_dir())
    from askflow.adapters.embedded_postgres import embedded_postgres_url
    from askflow.adapters.pgvector_store import PgVectorStore
    from askflow.config import Settings

    url = embedded_postgres_url(Settings().data_dir)
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((200, DIM)).astype(np.float32)
    results = {}
    for n in sizes:
        table = f"scale_{n}"
        store = PgVectorStore(url=url, collection=table)
        load_s = load(store, url, table, n, rng, centers)
        queries, texts = synthetic(50, rng, centers)
        query_texts = [" ".join(text.split()[:8]) for text in texts]
        latencies = []
        for q, text in zip(queries, query_texts, strict=True):
            started = time.perf_counter()
            store.hybrid_search(text, q, limit=40, alpha=0.5, audiences=None)
            latencies.append((time.perf_counter() - started) * 1000)
        keyword = keyword_budget(store, PgVectorStore(url=url, collection=table, keyword_rows=n),
                                 query_texts[:KEYWORD_QUERIES])
        near, near_texts = synthetic(50, rng, centers, clusters=np.arange(len(FAR_CLUSTERS), len(centers)))
        filtered = {audience: audience_search(store, near, [" ".join(t.split()[:8]) for t in near_texts], audience)
                    for audience in ("random1", "far1")}
        sweep = {}
        for ef in (40, 100, 200, 400):
            r, ms = recall(url, table, queries[:20], ef)
            sweep[f"ef_search={ef}"] = {"recall@10": round(r, 3), "p50_ms": round(ms, 2)}
        holding = [k for k, v in sweep.items() if v["recall@10"] >= 0.95]
        update = document_update(store, url, table, rng, centers)
        results[str(n)] = {"load_and_index_s": round(load_s, 1), "hybrid_search": summary_ms(latencies),
                           "keyword_search": keyword, "one_document_update": update,
                           "hybrid_search_one_percent_audience": filtered,
                           "hnsw": sweep, "lowest_setting_with_recall_0.95": holding[0] if holding else None}
        print(json.dumps({str(n): results[str(n)]}), file=sys.stderr, flush=True)  # survives a cut-off run
        store.close()
    return results


if __name__ == "__main__":
    sizes = [10_000, 100_000] + ([1_000_000] if "--million" in sys.argv else [])
    print(json.dumps(main(sizes)))
