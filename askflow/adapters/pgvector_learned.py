"""PgLearnedSignals: what the evaluation loop learned, in the vector store's PostgreSQL database (embedded, Cloud SQL
or AlloyDB alike). One row per graded request; the cited documents are an indexed array (the evidence of a
candidate document is one GIN lookup), and a verified answer's question embedding is searched exactly, filtered by
collection and model (verified answers number in the thousands, not millions)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from askflow.adapters.pgvector_store import _register_vector, _vector
from askflow.domain.model import LearnedAnswer
from askflow.ports import LearnedSignals


class PgLearnedSignals(LearnedSignals):
    """:param table: the table's name (from settings)."""

    def __init__(self, *, url: str, table: str, pool_size: int = 4) -> None:
        self._url = url
        self._name = table
        self._table = sql.Identifier(table)
        self._pool: ConnectionPool | None = None
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._ready = False

    def _connections(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(self._url, min_size=1, max_size=self._pool_size,
                                            configure=_register_vector, check=ConnectionPool.check_connection,
                                            open=True)
            pool = self._pool
        if not self._ready:
            self._ensure(pool)
        return pool

    def _ensure(self, pool: ConnectionPool) -> None:
        ddl = [
            sql.SQL("""CREATE TABLE IF NOT EXISTS {t} (
                request_id text PRIMARY KEY,
                collection text NOT NULL,
                embedding_model text NOT NULL,
                vote smallint NOT NULL,
                verified boolean NOT NULL,
                question_key text NOT NULL,
                cited_ids text[] NOT NULL,
                record jsonb NOT NULL,
                embedding vector,
                graded_at timestamptz NOT NULL
            )""").format(t=self._table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (cited_ids)").format(
                i=sql.Identifier(f"{self._name}_cited"), t=self._table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (collection, question_key) WHERE verified").format(
                i=sql.Identifier(f"{self._name}_key"), t=self._table),
        ]
        with pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._name,))
            for statement in ddl:
                conn.execute(statement)
        self._ready = True

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def record(self, answers: Sequence[LearnedAnswer], vectors: Sequence[Sequence[float] | None]) -> None:
        if not answers:
            return
        statement = sql.SQL(
            "INSERT INTO {t} (request_id, collection, embedding_model, vote, verified, question_key, cited_ids,"
            " record, embedding, graded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (request_id) DO UPDATE SET collection = EXCLUDED.collection,"
            " embedding_model = EXCLUDED.embedding_model, vote = EXCLUDED.vote, verified = EXCLUDED.verified,"
            " question_key = EXCLUDED.question_key, cited_ids = EXCLUDED.cited_ids, record = EXCLUDED.record,"
            " embedding = EXCLUDED.embedding, graded_at = EXCLUDED.graded_at"
        ).format(t=self._table)
        rows = [
            (a.request_id, a.collection, a.embedding_model, a.vote, a.verified, a.question_key, sorted(a.cited),
             Jsonb(a.model_dump(mode="json")), _vector(v) if v is not None else None, a.graded_at)
            for a, v in zip(answers, vectors, strict=True)
        ]
        with self._connections().connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(statement, rows)

    def citing(self, doc_ids: Sequence[str]) -> list[LearnedAnswer]:
        if not doc_ids:
            return []
        statement = sql.SQL("SELECT record FROM {t} WHERE cited_ids && %s AND vote <> 0").format(t=self._table)
        with self._connections().connection() as conn:
            return [LearnedAnswer.model_validate(row[0]) for row in conn.execute(statement, (list(doc_ids),))]

    def verified_by_key(self, question_key: str, *, collection: str,
                        readers: Sequence[str] | None = None) -> list[LearnedAnswer]:
        admits, admitted = _readers_filter(readers)
        statement = sql.SQL(
            "SELECT record FROM {t} WHERE verified AND collection = %s AND question_key = %s{admits}"
            " ORDER BY graded_at DESC LIMIT 5"
        ).format(t=self._table, admits=admits)
        with self._connections().connection() as conn:
            return [LearnedAnswer.model_validate(row[0])
                    for row in conn.execute(statement, (collection, question_key, *admitted))]

    def nearest(self, vector: Sequence[float], *, collection: str, embedding_model: str, limit: int,
                verified_only: bool, readers: Sequence[str] | None = None) -> list[tuple[LearnedAnswer, float]]:
        admits, admitted = _readers_filter(readers)
        statement = sql.SQL(
            "SELECT record, 1 - (embedding <=> %s) FROM {t} WHERE (verified OR NOT %s) AND vote <> 0"
            " AND collection = %s AND embedding_model = %s AND embedding IS NOT NULL AND vector_dims(embedding) = %s"
            "{admits} ORDER BY embedding <=> %s LIMIT %s"
        ).format(t=self._table, admits=admits)
        query = _vector(vector)
        with self._connections().connection() as conn:
            rows = conn.execute(statement, (query, verified_only, collection, embedding_model, len(query),
                                            *admitted, query, limit))
            return [(LearnedAnswer.model_validate(record), float(similarity)) for record, similarity in rows]

    def question_vectors(self, request_ids: Sequence[str], *, embedding_model: str) -> dict[str, list[float]]:
        if not request_ids:
            return {}
        statement = sql.SQL(
            "SELECT request_id, embedding FROM {t} WHERE request_id = ANY(%s) AND embedding_model = %s"
            " AND embedding IS NOT NULL").format(t=self._table)
        with self._connections().connection() as conn:
            return {request_id: [float(x) for x in vector]
                    for request_id, vector in conn.execute(statement, (list(request_ids), embedding_model))}

    def forget(self, request_ids: Sequence[str]) -> int:
        if not request_ids:
            return 0
        statement = sql.SQL("DELETE FROM {t} WHERE request_id = ANY(%s)").format(t=self._table)
        with self._connections().connection() as conn:
            return conn.execute(statement, (list(request_ids),)).rowcount

    def clear(self) -> None:
        with self._connections().connection() as conn:
            conn.execute(sql.SQL("TRUNCATE {t}").format(t=self._table))


def _readers_filter(readers: Sequence[str] | None) -> tuple[sql.Composable, list]:
    """``AND ...`` admitting only records one of ``readers`` may read (in the query, before its limit); nothing for
    ``None`` (an admin)."""
    if readers is None:
        return sql.SQL(""), []
    return sql.SQL(" AND (record -> 'readers') ?| %s::text[]"), [list(readers)]
