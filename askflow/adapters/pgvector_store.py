"""PgVectorStore: chunks in PostgreSQL with pgvector (embedded server, Cloud SQL or AlloyDB alike).

Hybrid search runs two indexed queries — HNSW cosine over the embedding and an IDF-weighted full-text search over
a generated ``tsvector`` (title and section weighted above the body) — and fuses them with weighted reciprocal
rank fusion. Postgres' own ``ts_rank`` knows nothing of term rarity, so the keyword side weights each query lexeme
by its inverse document frequency from a small statistics table refreshed after writes.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from askflow.adapters.fusion import weighted_rrf
from askflow.domain.errors import ConfigurationError
from askflow.domain.model import Chunk, ScoredChunk, SourceKind
from askflow.ports import VectorStore

_COLUMNS = "id, doc_id, chunk_index, content, title, section, url, sha, kind, metadata"


class PgVectorStore(VectorStore):
    """:param url: a libpq URL. :param collection: the table name (from settings)."""

    def __init__(
        self, *, url: str, collection: str, pool_size: int = 8, ef_search: int = 200, keyword_rows: int = 10_000
    ) -> None:
        """:param ef_search: HNSW search breadth; 200 holds recall@10 ≥ 0.95 at 100k chunks; at 1M it
        gave 0.915-0.975 across index builds and 400 gave 0.965 (bench/scale.py).
        :param keyword_rows: about how many rows a keyword search may rank (see ``keyword_search``)."""
        self._ef_search = ef_search
        self._keyword_rows = keyword_rows
        self._url = url
        self._collection = collection
        self._table = sql.Identifier(collection)
        self._stats = sql.Identifier(f"{collection}_lexemes")
        self._pool: ConnectionPool | None = None
        self._pool_size = pool_size
        self._pool_lock = threading.Lock()

    # -- connections -------------------------------------------------------------------------------------------
    def _connections(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._pool_size,
                    configure=_register_vector,
                    check=ConnectionPool.check_connection,  # a restarted server: reconnect, don't fail the call
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # -- schema ------------------------------------------------------------------------------------------------
    def ensure_collection(self, dimension: int) -> None:
        ddl = [
            sql.SQL(
                """CREATE TABLE IF NOT EXISTS {t} (
                    id uuid PRIMARY KEY,
                    doc_id text NOT NULL,
                    chunk_index integer NOT NULL,
                    content text NOT NULL,
                    title text NOT NULL DEFAULT '',
                    section text NOT NULL DEFAULT '',
                    url text NOT NULL DEFAULT '',
                    sha text NOT NULL,
                    kind text NOT NULL,
                    metadata jsonb NOT NULL DEFAULT '{{}}',
                    embedding vector({dim}) NOT NULL,
                    tsv tsvector GENERATED ALWAYS AS (
                        setweight(to_tsvector('english', title || ' ' || section), 'A')
                        || to_tsvector('english', content)
                    ) STORED
                )"""
            ).format(t=self._table, dim=sql.Literal(dimension)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (doc_id)").format(
                i=sql.Identifier(f"{self._collection}_doc_id"), t=self._table
            ),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
                i=sql.Identifier(f"{self._collection}_tsv"), t=self._table
            ),
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
                " WITH (m = 16, ef_construction = 64)"
            ).format(i=sql.Identifier(f"{self._collection}_embedding"), t=self._table),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {s} (word text PRIMARY KEY, ndoc integer NOT NULL)"
            ).format(s=self._stats),
        ]
        with self._connections().connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._collection,))
            for statement in ddl:
                conn.execute(statement)
            (stored,) = conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (self._table.as_string(conn),),
            ).fetchone()
        if stored != dimension:
            raise ConfigurationError(
                f"collection {self._collection!r} holds {stored}-dimension vectors and the embedding model makes "
                f"{dimension}: set ASKFLOW_COLLECTION to another collection for this model"
            )

    # -- writes ------------------------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        if not chunks:
            return 0
        statement = sql.SQL(
            "INSERT INTO {t} (" + _COLUMNS + ", embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content, title = EXCLUDED.title,"
            " section = EXCLUDED.section, url = EXCLUDED.url, sha = EXCLUDED.sha, kind = EXCLUDED.kind,"
            " metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding"
        ).format(t=self._table)
        rows = [
            (
                c.chunk_id, c.doc_id, c.index, c.content, c.title, c.section, c.url, c.sha,
                c.kind.value, Jsonb(c.metadata), _vector(v),
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        with self._connections().connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(statement, rows)
        return len(rows)

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        statement = sql.SQL("DELETE FROM {t} WHERE doc_id = ANY(%s)").format(t=self._table)
        with self._connections().connection() as conn:
            return conn.execute(statement, (list(doc_ids),)).rowcount

    def finalize_writes(self) -> None:
        """Recompute lexeme document frequencies: one pass over the table, run once after a batch of writes.

        The row with the empty word (never a lexeme) holds the number of chunks.
        """
        with self._connections().connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self._collection}_lexemes",))
            conn.execute(sql.SQL("DELETE FROM {s}").format(s=self._stats))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {s} (word, ndoc) SELECT word, ndoc FROM ts_stat({q})"
                ).format(s=self._stats, q=sql.Literal(f'SELECT tsv FROM "{self._collection}"'))
            )
            conn.execute(
                sql.SQL("INSERT INTO {s} (word, ndoc) SELECT '', count(*) FROM {t}").format(
                    s=self._stats, t=self._table
                )
            )

    # -- reads -------------------------------------------------------------------------------------------------
    def document_fingerprints(self, prefix: str = "") -> dict[str, str]:
        statement = sql.SQL("SELECT DISTINCT doc_id, sha FROM {t} WHERE starts_with(doc_id, %s)").format(
            t=self._table
        )
        with self._connections().connection() as conn:
            return {doc_id: sha for doc_id, sha in conn.execute(statement, (prefix,))}

    def document_metadata(self, prefix: str) -> dict[str, dict]:
        statement = sql.SQL(
            "SELECT DISTINCT ON (doc_id) doc_id, metadata FROM {t} WHERE starts_with(doc_id, %s)"
            " ORDER BY doc_id, chunk_index"
        ).format(t=self._table)
        with self._connections().connection() as conn:
            return {doc_id: metadata or {} for doc_id, metadata in conn.execute(statement, (prefix,))}

    def count(self) -> int:
        with self._connections().connection() as conn:
            return conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=self._table)).fetchone()[0]

    def hybrid_search(
        self, text: str, vector: Sequence[float], *, limit: int, alpha: float
    ) -> list[ScoredChunk]:
        dense = self.vector_search(vector, limit=limit) if alpha > 0 else []
        sparse = self.keyword_search(text, limit=limit) if alpha < 1 else []
        by_id = {sc.chunk.chunk_id: sc.chunk for sc in dense + sparse}
        fused = weighted_rrf(
            [[sc.chunk.chunk_id for sc in dense], [sc.chunk.chunk_id for sc in sparse]],
            weights=[alpha, 1 - alpha],
        )
        return [ScoredChunk(by_id[cid], score) for cid, score in fused[:limit]]

    def vector_search(self, vector: Sequence[float], *, limit: int) -> list[ScoredChunk]:
        statement = sql.SQL(
            "SELECT " + _COLUMNS + ", 1 - (embedding <=> %s) AS score FROM {t} ORDER BY embedding <=> %s LIMIT %s"
        ).format(t=self._table)
        query_vector = _vector(vector)
        with self._connections().connection() as conn:
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(self._ef_search)))
            rows = conn.execute(statement, (query_vector, query_vector, limit)).fetchall()
        return [ScoredChunk(_chunk(row), float(row[-1])) for row in rows]

    def keyword_search(self, text: str, *, limit: int) -> list[ScoredChunk]:
        """BM25-like: each query lexeme's ``ts_rank`` weighted by its IDF, summed over the lexemes.

        Postgres ranks every row that matches, so the cost grows with how many rows the query's words occur in.
        Rows are selected by the query's rarest lexemes, as many as keep the rows to rank under ``keyword_rows``
        (at least one); the commoner ones still add to the score of the rows selected. Like Lucene's common-terms
        query: on a corpus of no more rows than the budget nothing changes, and on a large one a word that occurs
        everywhere ("dag", "task") no longer makes the search rank the whole table.
        """
        with self._connections().connection() as conn:
            lexemes = [
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', %s))", (text,)
                )
            ]
            if not lexemes:
                return []
            frequencies = dict(
                conn.execute(
                    sql.SQL("SELECT word, ndoc FROM {s} WHERE word = ANY(%s)").format(s=self._stats),
                    (["", *lexemes],),
                ).fetchall()
            )
            total = max(frequencies.pop("", 0), 1)
            weighted = {
                word: math.log(1 + (total - n + 0.5) / (n + 0.5))
                for word, n in frequencies.items()
                if n > 0
            }
            if not weighted:
                return []
            # One sum of per-lexeme ranks per row, not a join of rows with lexemes and a GROUP BY: the same scores,
            # three to four times faster at 100k chunks (bench/scale.py).
            score = sql.SQL(" + ").join(
                [sql.SQL("%s * ts_rank(tsv, to_tsquery('simple', %s), 1)")] * len(weighted)
            )
            score_params = [value for word, idf in weighted.items() for value in (idf, _quote_lexeme(word))]
            statement = sql.SQL(
                """WITH scored AS (
                       SELECT id, {score} AS score FROM {t} WHERE tsv @@ to_tsquery('simple', %s)
                       ORDER BY score DESC LIMIT %s
                   )
                   SELECT {cols}, scored.score FROM scored JOIN {t} c USING (id) ORDER BY scored.score DESC"""
            ).format(
                score=score,
                t=self._table,
                cols=sql.SQL(", ").join(sql.SQL("c.") + sql.Identifier(c) for c in _COLUMNS.split(", ")),
            )
            selecting = list(weighted) if total <= self._keyword_rows else self._rarest(weighted, frequencies)
            disjunction = " | ".join(_quote_lexeme(w) for w in selecting)
            rows = conn.execute(statement, (*score_params, disjunction, limit)).fetchall()
        return [ScoredChunk(_chunk(row), float(row[-1])) for row in rows]

    def _rarest(self, words: Sequence[str], frequencies: dict[str, int]) -> list[str]:
        """The rarest words whose rows add up to at most ``keyword_rows`` (at least the rarest one)."""
        selecting, matching = [], 0
        for word in sorted(words, key=frequencies.__getitem__):
            if selecting and matching + frequencies[word] > self._keyword_rows:
                break
            selecting.append(word)
            matching += frequencies[word]
        return selecting


def _register_vector(conn: psycopg.Connection) -> None:
    """Each new connection learns the ``vector`` type; the first one to a fresh database creates the extension
    (under an advisory lock, since several processes may start at once)."""
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:  # "vector type not found in the database"
        conn.rollback()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('CREATE EXTENSION vector'))")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)


def _quote_lexeme(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"


def _vector(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _chunk(row: Sequence) -> Chunk:
    _id, doc_id, index, content, title, section, url, sha, kind, metadata = row[:10]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return Chunk(
        doc_id=doc_id, index=index, content=content, title=title, section=section, url=url, sha=sha,
        kind=SourceKind(kind), metadata=metadata or {},
    )
