"""PgVectorStore: chunks in PostgreSQL with pgvector (embedded server, Cloud SQL or AlloyDB alike).

Hybrid search runs two indexed queries — HNSW cosine over the embedding and an IDF-weighted full-text search over
a generated ``tsvector`` (title and section weighted above the body: the chunk's model-written context and its
content, ``pgvector_keywords``) — and fuses them with weighted reciprocal rank fusion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from askflow.adapters.pgvector_keywords import COLUMNS, PgKeywordIndex, audience_filter, chunk_from_row
from askflow.domain.errors import ConfigurationError
from askflow.domain.model import Chunk, ScoredChunk
from askflow.ports import VectorStore
from askflow.retrieval.fusion import weighted_rrf

#: what keyword search reads of a chunk: its title and section, weighted above its context and content
EXACT_BELOW = 20_000  # an audience admitting at most this many chunks is searched exactly, not through HNSW
ROW_TARGET = 8160  # bytes: a row is kept whole, none of it moved to TOAST, up to this size (PostgreSQL's maximum)
ADMITTED_TTL_S = 60.0  # how long a count of what an audience admits is used
KEYWORD_TEXT = ("setweight(to_tsvector('english', title || ' ' || section), 'A')"
                " || to_tsvector('english', context || ' ' || content)")

class PgVectorStore(VectorStore):
    """:param url: a libpq URL. :param collection: the table name (from settings)."""

    def __init__(
        self, *, url: str, collection: str, pool_size: int = 8, ef_search: int = 200, keyword_rows: int = 10_000,
        exact_below: int = EXACT_BELOW,
    ) -> None:
        """:param ef_search: HNSW search breadth; 200 holds recall@10 ≥ 0.95 at 100k chunks; at 1M it
        gave 0.915-0.975 across index builds and 400 gave 0.965 (bench/scale.py).
        :param keyword_rows: about how many rows a keyword search may rank (see ``keyword_search``).
        :param exact_below: an audience filter admitting at most this many chunks is searched exactly (see
            ``vector_search``)."""
        self._ef_search = ef_search
        self._exact_below = exact_below
        self._url = url
        self._collection = collection
        self._table = sql.Identifier(collection)
        self._keywords = PgKeywordIndex(pool=self._connections, collection=collection, keyword_rows=keyword_rows)
        self._pool: ConnectionPool | None = None
        self._pool_size = pool_size
        self._pool_lock = threading.Lock()
        self._admits: dict[tuple[str, ...], tuple[float, int]] = {}  # audiences -> (when counted, chunks admitted)

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
                    audiences text[],
                    context text NOT NULL DEFAULT '',
                    source_location text,
                    source_version text,
                    ingested_at timestamptz,
                    ingest_run text,
                    embedding vector({dim}) NOT NULL,
                    tsv tsvector GENERATED ALWAYS AS ({keyword_text}) STORED
                )"""
            ).format(t=self._table, dim=sql.Literal(dimension), keyword_text=sql.SQL(KEYWORD_TEXT)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (doc_id)").format(
                i=sql.Identifier(f"{self._collection}_doc_id"), t=self._table
            ),
            # a collection made before audiences: its chunks stay unlabelled (NULL), read by admins only, until their
            # location is indexed or relabelled again
            sql.SQL("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS audiences text[]").format(t=self._table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (audiences)").format(
                i=sql.Identifier(f"{self._collection}_audiences"), t=self._table
            ),
            # a collection made before contexts: every chunk's is empty, so its keyword text (and the statistics of
            # its words) stays the same once the context joins it
            sql.SQL("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS context text NOT NULL DEFAULT ''").format(t=self._table),
            # a collection made before lineage: its chunks have no provenance (NULL) until their documents are
            # written again; adding nullable columns rewrites no row
            sql.SQL("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS source_location text,"
                    " ADD COLUMN IF NOT EXISTS source_version text, ADD COLUMN IF NOT EXISTS ingested_at timestamptz,"
                    " ADD COLUMN IF NOT EXISTS ingest_run text").format(t=self._table),
        ]
        indexes = [
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
                i=sql.Identifier(f"{self._collection}_tsv"), t=self._table
            ),
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)"
                " WITH (m = 16, ef_construction = 64)"
            ).format(i=sql.Identifier(f"{self._collection}_embedding"), t=self._table),
            self._keywords.ddl(),
        ]
        with self._connections().connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._collection,))
            for statement in ddl:
                conn.execute(statement)
            self._keyword_text_with_context(conn)
            self._rows_whole(conn)
            for statement in indexes:
                conn.execute(statement)
            self._keywords.initialize(conn)
            (stored,) = conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (self._table.as_string(conn),),
            ).fetchone()
        if stored != dimension:
            raise ConfigurationError(
                f"collection {self._collection!r} holds {stored}-dimension vectors and the embedding model makes "
                f"{dimension}: set ASKFLOW_COLLECTION to another collection for this model"
            )

    def _rows_whole(self, conn: psycopg.Connection) -> None:
        """In ``ensure_collection``'s transaction: vectors inline (``MAIN``: out of line only when the row fills a
        page) and rows whole up to a page (``toast_tuple_target``), so a search filtered to a small audience reads
        the embedding and keyword text of each row it admits on that row's page, not through TOAST (at 1M chunks a
        1% audience's exact search read five times the pages). Altered only when not yet so: an ALTER TABLE locks
        the table and makes every session plan its queries again. Rows written before keep their layout until they
        are written again (or ``VACUUM FULL``)."""
        storage, options = conn.execute(
            "SELECT a.attstorage, c.reloptions FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE a.attrelid = %s::regclass AND a.attname = 'embedding'", (self._table.as_string(conn),),
        ).fetchone()
        if storage != "m" or f"toast_tuple_target={ROW_TARGET}" not in (options or []):
            conn.execute(sql.SQL("ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE MAIN,"
                                 " SET (toast_tuple_target = {target})").format(t=self._table,
                                                                               target=sql.Literal(ROW_TARGET)))

    def _keyword_text_with_context(self, conn: psycopg.Connection) -> None:
        """In ``ensure_collection``'s transaction: a table whose keyword text was generated before contexts gets it
        generated again with them (dropped and added, before its GIN index is made again)."""
        (expression,) = conn.execute(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a"
            " ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = %s::regclass AND a.attname = 'tsv'",
            (self._table.as_string(conn),),
        ).fetchone()
        if "context" not in expression:
            conn.execute(sql.SQL(
                "ALTER TABLE {t} DROP COLUMN tsv, ADD COLUMN tsv tsvector GENERATED ALWAYS AS ({keyword_text}) STORED"
            ).format(t=self._table, keyword_text=sql.SQL(KEYWORD_TEXT)))

    # -- writes ------------------------------------------------------------------------------------------------
    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        """Insert the chunks not stored yet and count their lexemes in the keyword statistics, in one transaction.

        A chunk id names its content (document, position and the fingerprint of the document's title, url and text
        with the chunking strategy), so a stored id is not counted again: only what the id does not name (kind,
        metadata, audiences, context, provenance, embedding) is updated (a chunk written with no provenance keeps
        the stored one), and a chunk whose context changed has the lexemes of its keyword text as it was taken from
        the statistics and those of its new one added.
        """
        if not chunks:
            return 0
        insert = sql.SQL(
            "INSERT INTO {t} (" + COLUMNS + ", embedding) VALUES (" + ", ".join(["%s"] * 17) + ")"
            " ON CONFLICT (id) DO NOTHING RETURNING id"
        ).format(t=self._table)
        update = sql.SQL(
            "UPDATE {t} SET kind = %s, metadata = %s, audiences = %s, context = %s,"
            " source_location = COALESCE(%s, source_location), source_version = COALESCE(%s, source_version),"
            " ingested_at = COALESCE(%s, ingested_at), ingest_run = COALESCE(%s, ingest_run), embedding = %s"
            " WHERE id = %s"
        ).format(t=self._table)
        rows = [
            (
                c.chunk_id, c.doc_id, c.index, c.content, c.title, c.section, c.url, c.sha, c.kind.value,
                Jsonb(c.metadata), list(c.audiences) if c.audiences is not None else None, c.context,
                *_provenance(c), _vector(v),
            )
            for c, v in zip(chunks, vectors, strict=True)
        ]
        with self._connections().connection() as conn, conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(insert, rows, returning=True)
                inserted = set()
                while True:
                    inserted.update(str(row[0]) for row in cur.fetchall())
                    if not cur.nextset():
                        break
                existing = [row for row in rows if row[0] not in inserted]
                recontexted = self._context_changed(conn, {row[0]: row[11] for row in existing})
                if recontexted:
                    conn.execute(self._keyword_count(sign=-1), (recontexted,))
                if existing:
                    cur.executemany(update, [(*row[8:17], row[0]) for row in existing])
                if recontexted:
                    conn.execute(self._keyword_count(sign=1), (recontexted,))
            if inserted:
                conn.execute(self._keyword_count(sign=1), (sorted(inserted),))
        return len(rows)

    def _context_changed(self, conn: psycopg.Connection, contexts: dict[str, str]) -> list[str]:
        """Those of the stored chunks ``contexts`` names (id -> the context being written) whose stored context
        differs."""
        if not contexts:
            return []
        statement = sql.SQL("SELECT id, context FROM {t} WHERE id = ANY(%s::uuid[])").format(t=self._table)
        stored = {str(chunk_id): context for chunk_id, context in conn.execute(statement, (list(contexts),))}
        return sorted(chunk_id for chunk_id, context in stored.items() if contexts[chunk_id] != context)

    def _keyword_count(self, *, sign: int) -> sql.Composed:
        """Add (``sign`` 1) or take (-1) the lexemes of the rows whose ids are the statement's parameter to or from
        the keyword statistics."""
        return sql.SQL("WITH counted AS (SELECT tsv FROM {t} WHERE id = ANY(%s::uuid[])) {adjust}").format(
            t=self._table, adjust=self._keywords.adjustment("counted", sign=sign))

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete the documents' chunks and subtract their lexemes from the keyword statistics, in one statement."""
        if not doc_ids:
            return 0
        statement = sql.SQL(
            "WITH deleted AS (DELETE FROM {t} WHERE doc_id = ANY(%s) RETURNING tsv), adjusted AS ({adjust})"
            " SELECT count(*) FROM deleted"
        ).format(t=self._table, adjust=self._keywords.adjustment("deleted", sign=-1))
        with self._connections().connection() as conn, conn.transaction():
            return conn.execute(statement, (list(doc_ids),)).fetchone()[0]

    def rebuild_keyword_statistics(self) -> None:
        """Recompute the keyword statistics from the whole table (a pass over it): for repair, or after rows were
        written behind the store's back (a bulk ``COPY``). Writes keep them current without it."""
        self._keywords.rebuild()

    # -- reads -------------------------------------------------------------------------------------------------
    def document_fingerprints(self, prefix: str) -> dict[str, str]:
        statement = sql.SQL("SELECT DISTINCT doc_id, sha FROM {t} WHERE starts_with(doc_id, %s)").format(
            t=self._table
        )
        with self._connections().connection() as conn:
            return {doc_id: sha for doc_id, sha in conn.execute(statement, (prefix,))}

    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        if not doc_ids:
            return {}
        statement = sql.SQL("SELECT DISTINCT doc_id, sha FROM {t} WHERE doc_id = ANY(%s)").format(t=self._table)
        with self._connections().connection() as conn:
            return {doc_id: sha for doc_id, sha in conn.execute(statement, (list(doc_ids),))}

    def document_chunks(self, doc_id: str, *, audiences: Sequence[str] | None) -> list[Chunk]:
        admits, params = audience_filter(audiences)
        statement = sql.SQL("SELECT " + COLUMNS + " FROM {t} WHERE doc_id = %s{admits} ORDER BY chunk_index").format(
            t=self._table, admits=admits)
        with self._connections().connection() as conn:
            return [chunk_from_row(row) for row in conn.execute(statement, (doc_id, *params))]

    def relabel(self, doc_ids: Sequence[str], audiences: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        statement = sql.SQL(
            "UPDATE {t} SET audiences = %s WHERE doc_id = ANY(%s) AND audiences IS DISTINCT FROM %s").format(
            t=self._table)
        labels = sorted(set(audiences))
        with self._connections().connection() as conn, conn.transaction():
            return conn.execute(statement, (labels, list(doc_ids), labels)).rowcount

    def audiences_of(self, doc_ids: Sequence[str]) -> dict[str, list[str] | None]:
        if not doc_ids:
            return {}
        statement = sql.SQL(
            "SELECT DISTINCT ON (doc_id) doc_id, audiences FROM {t} WHERE doc_id = ANY(%s) ORDER BY doc_id, chunk_index"
        ).format(t=self._table)
        with self._connections().connection() as conn:
            return dict(conn.execute(statement, (list(doc_ids),)).fetchall())

    def scope_audiences(self, prefix: str) -> list[str] | None:
        statement = sql.SQL("SELECT audiences FROM {t} WHERE starts_with(doc_id, %s) LIMIT 1").format(t=self._table)
        with self._connections().connection() as conn:
            row = conn.execute(statement, (prefix,)).fetchone()
        return row[0] if row else None

    def document_audiences(self, prefix: str) -> dict[str, list[str] | None]:
        statement = sql.SQL(
            "SELECT DISTINCT ON (doc_id) doc_id, audiences FROM {t} WHERE starts_with(doc_id, %s)"
            " ORDER BY doc_id, chunk_index").format(t=self._table)
        with self._connections().connection() as conn:
            return dict(conn.execute(statement, (prefix,)).fetchall())

    def document_metadata(self, prefix: str) -> dict[str, dict]:
        statement = sql.SQL(
            "SELECT DISTINCT ON (doc_id) doc_id, metadata FROM {t} WHERE starts_with(doc_id, %s)"
            " ORDER BY doc_id, chunk_index"
        ).format(t=self._table)
        with self._connections().connection() as conn:
            return {doc_id: metadata or {} for doc_id, metadata in conn.execute(statement, (prefix,))}

    def chunks(self, *, after: str | None, limit: int) -> list[Chunk]:
        statement = sql.SQL(
            "SELECT " + COLUMNS + " FROM {t} WHERE %s::uuid IS NULL OR id > %s::uuid ORDER BY id LIMIT %s"
        ).format(t=self._table)
        with self._connections().connection() as conn:
            return [chunk_from_row(row) for row in conn.execute(statement, (after, after, limit))]

    def count(self) -> int:
        with self._connections().connection() as conn:
            return conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=self._table)).fetchone()[0]

    def hybrid_search(
        self, text: str, vector: Sequence[float], *, limit: int, alpha: float, audiences: Sequence[str] | None
    ) -> list[ScoredChunk]:
        """The two searches at once, each on its own connection (the vector one in a thread of its own while the
        keyword one runs here), then fused: the wait is the slower of them, not their sum."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            searching = pool.submit(self.vector_search, vector, limit=limit, audiences=audiences) if alpha > 0 else None
            sparse = self.keyword_search(text, limit=limit, audiences=audiences) if alpha < 1 else []
            dense = searching.result() if searching is not None else []
        by_id = {sc.chunk.chunk_id: sc.chunk for sc in dense + sparse}
        fused = weighted_rrf(
            [[sc.chunk.chunk_id for sc in dense], [sc.chunk.chunk_id for sc in sparse]],
            weights=[alpha, 1 - alpha],
        )
        return [ScoredChunk(by_id[cid], score) for cid, score in fused[:limit]]

    def keyword_search(self, text: str, *, limit: int, audiences: Sequence[str] | None) -> list[ScoredChunk]:
        """``PgKeywordIndex.search``, told how few chunks a selective filter admits (``_admitted``)."""
        admitted = self._admitted(audiences) if audiences is not None else None
        return self._keywords.search(text, limit=limit, audiences=audiences, admitted=admitted)

    def vector_search(self, vector: Sequence[float], *, limit: int,
                      audiences: Sequence[str] | None = None) -> list[ScoredChunk]:
        """Nearest chunks by cosine. With ``audiences`` the filter is in the query. A filter that admits few chunks
        (at most ``exact_below``, counted through its GIN index and remembered for ``ADMITTED_TTL_S``) is searched
        exactly: the admitted rows first, then their distances, which is faster than walking an HNSW graph whose
        neighbourhood of the question holds none of them, and misses nothing. A broader one goes through the HNSW
        index with pgvector's iterative scan (0.8: ``hnsw.iterative_scan``), which keeps reading the graph until
        ``limit`` rows pass it (up to ``hnsw.max_scan_tuples`` visited)."""
        admits, params = audience_filter(audiences)
        query_vector = _vector(vector)
        with self._connections().connection() as conn, conn.transaction():
            if audiences is not None and self._admitted(audiences, conn) is not None:
                statement = sql.SQL(  # the admitted ids and distances alone, then the nearest's rows
                    "WITH admitted AS MATERIALIZED"
                    " (SELECT id, embedding <=> %s AS distance FROM {t} WHERE true{admits}),"
                    " nearest AS (SELECT id, distance FROM admitted ORDER BY distance LIMIT %s)"
                    " SELECT " + COLUMNS + ", 1 - nearest.distance AS score FROM nearest JOIN {t} USING (id)"
                    " ORDER BY nearest.distance"
                ).format(t=self._table, admits=admits)
                rows = conn.execute(statement, (query_vector, *params, limit)).fetchall()
                return [ScoredChunk(chunk_from_row(row), float(row[-1])) for row in rows]
            conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(self._ef_search)))
            if audiences is not None:
                conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            statement = sql.SQL(
                "SELECT " + COLUMNS + ", 1 - (embedding <=> %s) AS score FROM {t} WHERE true{admits}"
                " ORDER BY embedding <=> %s LIMIT %s"
            ).format(t=self._table, admits=admits)
            rows = conn.execute(statement, (query_vector, *params, query_vector, limit)).fetchall()
        return [ScoredChunk(chunk_from_row(row), float(row[-1])) for row in rows]

    def _admitted(self, audiences: Sequence[str], conn: psycopg.Connection | None = None) -> int | None:
        """How many chunks ``audiences`` admit when that is at most ``exact_below`` (``None``: more; the HNSW index
        and the keyword row budget serve it), counted up to ``exact_below`` + 1 and remembered for
        ``ADMITTED_TTL_S``: what a filter admits changes with ingestion, not per question. A remembered count
        takes no connection; ``conn``: the caller's, for a count it has not."""
        key, now = tuple(sorted(audiences)), time.monotonic()
        with self._pool_lock:
            known = self._admits.get(key)
        if known is None or now - known[0] >= ADMITTED_TTL_S:
            if conn is None:
                with self._connections().connection() as own:
                    return self._admitted(audiences, own)
            admits, params = audience_filter(audiences)
            counted = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {t} WHERE true{admits} LIMIT %s) s")
                                   .format(t=self._table, admits=admits), (*params, self._exact_below + 1)
                                   ).fetchone()[0]
            known = (now, counted)
            with self._pool_lock:
                self._admits[key] = known
        return known[1] if known[1] <= self._exact_below else None


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


def _provenance(chunk: Chunk) -> tuple:
    """A chunk's provenance columns (location, version, ingested_at, run): NULLs when it has none."""
    p = chunk.provenance
    return (None, None, None, None) if p is None else (p.location, p.version, p.ingested_at, p.run)


def _vector(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)
