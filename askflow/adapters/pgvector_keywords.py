"""The keyword side of ``PgVectorStore``: an IDF-weighted full-text search over the table's generated ``tsvector``.

Postgres' own ``ts_rank`` knows nothing of term rarity, so each query lexeme's rank is weighted by its inverse
document frequency, read from a small statistics table (``{collection}_lexemes``: word -> how many chunks hold it;
the empty word, never a lexeme, holds the number of chunks). Every write adjusts it in its own transaction by the
rows it inserted or deleted (``adjustment``), so no write waits for a pass over the table; ``rebuild`` recomputes it
whole, for a table that has none yet or for repair. Also the row layout both sides read (``COLUMNS``,
``chunk_from_row``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from askflow.domain.model import Chunk, Provenance, ScoredChunk, SourceKind

COLUMNS = ("id, doc_id, chunk_index, content, title, section, url, sha, kind, metadata, audiences, context,"
           " source_location, source_version, ingested_at, ingest_run")


def chunk_from_row(row: Sequence) -> Chunk:
    """A chunk from a row that starts with ``COLUMNS`` (no provenance: a row written before lineage)."""
    _id, doc_id, index, content, title, section, url, sha, kind, metadata, audiences, context = row[:12]
    location, version, ingested_at, run = row[12:16]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    provenance = None if (location, version, ingested_at, run) == (None, None, None, None) else Provenance(
        location=location or "", version=version or "", ingested_at=ingested_at, run=run or "")
    return Chunk(
        doc_id=doc_id, index=index, content=content, title=title, section=section, url=url, sha=sha,
        kind=SourceKind(kind), metadata=metadata or {}, audiences=tuple(audiences) if audiences is not None else None,
        context=context, provenance=provenance,
    )


def audience_filter(audiences: Sequence[str] | None, *, column: str = "audiences") -> tuple[sql.Composable, list]:
    """The ``AND ...`` a query adds to admit only chunks naming one of ``audiences`` (an indexed array overlap; an
    unlabelled chunk, NULL, never matches), and its parameters; nothing for ``None`` (no filter)."""
    if audiences is None:
        return sql.SQL(""), []
    return sql.SQL(" AND {c} && %s::text[]").format(c=sql.Identifier(column)), [list(audiences)]


class PgKeywordIndex:
    """:param pool: the store's connection pool (opened on first use). :param keyword_rows: about how many rows a
    search may rank (see ``search``)."""

    def __init__(self, *, pool: Callable[[], ConnectionPool], collection: str, keyword_rows: int) -> None:
        self._pool = pool
        self._table = sql.Identifier(collection)
        self._stats = sql.Identifier(f"{collection}_lexemes")
        self._keyword_rows = keyword_rows

    def ddl(self) -> sql.Composed:
        return sql.SQL("CREATE TABLE IF NOT EXISTS {s} (word text PRIMARY KEY, ndoc integer NOT NULL)").format(
            s=self._stats)

    def initialize(self, conn: Connection) -> None:
        """In the caller's transaction: build the statistics of a table that has none (a new one, or one made before
        they were kept up to date by every write) with one ``rebuild``; a table that has them is left alone."""
        statement = sql.SQL("SELECT EXISTS (SELECT FROM {s} WHERE word = '')").format(s=self._stats)
        if not conn.execute(statement).fetchone()[0]:
            self.rebuild(conn)

    def rebuild(self, conn: Connection | None = None) -> None:
        """Recompute the statistics from the whole table: one pass over it (in ``conn``'s transaction if given).

        Writers adjusting the statistics meanwhile wait for it (the table lock), and the rows they wrote before it
        are either counted by it (committed) or added by them after it (not yet), so no write is lost or counted twice.
        """
        if conn is None:
            with self._pool().connection() as own, own.transaction():
                self.rebuild(own)
            return
        conn.execute(sql.SQL("LOCK TABLE {s} IN EXCLUSIVE MODE").format(s=self._stats))
        conn.execute(sql.SQL("DELETE FROM {s}").format(s=self._stats))
        rows = sql.SQL("SELECT tsv FROM {t}").format(t=self._table).as_string(conn)
        conn.execute(
            sql.SQL("INSERT INTO {s} (word, ndoc) SELECT word, ndoc FROM ts_stat({q})").format(
                s=self._stats, q=sql.Literal(rows))
        )
        conn.execute(
            sql.SQL("INSERT INTO {s} (word, ndoc) SELECT '', count(*) FROM {t}").format(s=self._stats, t=self._table)
        )

    def adjustment(self, rows: str, *, sign: int) -> sql.Composed:
        """The statement that adds (``sign`` 1) or subtracts (-1) the lexemes of the rows of the CTE named ``rows``
        (with a ``tsv`` column) and their number to the statistics, for a ``WITH {rows} AS (...)`` to precede.

        The statistics rows are locked in word order, the same in every writer, so that concurrent batches sharing
        words wait for each other instead of deadlocking; a word whose count reaches 0 keeps its row (search
        ignores it, ``rebuild`` drops it).
        """
        return sql.SQL(
            "INSERT INTO {s} AS s (word, ndoc)"
            " SELECT word, {sign} * count(*) FROM ("
            "SELECT u.lexeme FROM {r} AS r, unnest(r.tsv) AS u UNION ALL SELECT '' FROM {r}"
            ") AS w (word) GROUP BY word ORDER BY word"
            " ON CONFLICT (word) DO UPDATE SET ndoc = s.ndoc + EXCLUDED.ndoc"
        ).format(s=self._stats, sign=sql.Literal(sign), r=sql.Identifier(rows))

    def search(self, text: str, *, limit: int, audiences: Sequence[str] | None,
               admitted: int | None = None) -> list[ScoredChunk]:
        """BM25-like: each query lexeme's ``ts_rank`` weighted by its IDF, summed over the lexemes.

        Postgres ranks every row that matches, so the cost grows with how many rows the query's words occur in.
        Rows are selected by the query's rarest lexemes, as many as keep the rows to rank under ``keyword_rows``
        (at least one); the commoner ones still add to the score of the rows selected. Like Lucene's common-terms
        query: on a corpus of no more rows than the budget nothing changes, and on a large one a word that occurs
        everywhere ("dag", "task") no longer makes the search rank the whole table. ``admitted``: how many rows a
        selective filter admits (``None``: most of them): up to twice the budget, those rows are read first and
        ranked by every word (``_search_admitted``), so a 1% audience is never left short by the rarest words.
        """
        with self._pool().connection() as conn:
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
            admits, admits_params = audience_filter(audiences)
            # One sum of per-lexeme ranks per row, not a join of rows with lexemes and a GROUP BY: the same scores,
            # three to four times faster at 100k chunks (bench/scale.py).
            score = sql.SQL(" + ").join(
                [sql.SQL("%s * ts_rank(tsv, to_tsquery('simple', %s), 1)")] * len(weighted)
            )
            score_params = [value for word, idf in weighted.items() for value in (idf, _quote_lexeme(word))]
            statement = sql.SQL(
                """WITH scored AS (
                       SELECT id, {score} AS score FROM {t} WHERE tsv @@ to_tsquery('simple', %s){admits}
                       ORDER BY score DESC LIMIT %s
                   )
                   SELECT {cols}, scored.score FROM scored JOIN {t} c USING (id) ORDER BY scored.score DESC"""
            ).format(
                score=score,
                admits=admits,
                t=self._table,
                cols=sql.SQL(", ").join(sql.SQL("c.") + sql.Identifier(c) for c in COLUMNS.split(", ")),
            )
            if admitted is not None and admitted <= 2 * self._keyword_rows:  # a selective filter: its rows first
                return self._search_admitted(conn, score, score_params, weighted, audiences, limit)
            selecting = list(weighted) if total <= self._keyword_rows else self._rarest(weighted, frequencies)
            disjunction = " | ".join(_quote_lexeme(w) for w in selecting)
            rows = conn.execute(statement, (*score_params, disjunction, *admits_params, limit)).fetchall()
            if audiences is not None and len(rows) < limit and len(selecting) < len(weighted):
                # the rarest words may occur only in chunks this asker may not read (the statistics count every
                # chunk): select by every word rather than come back short, and say nothing of what else exists
                every = " | ".join(_quote_lexeme(w) for w in weighted)
                rows = conn.execute(statement, (*score_params, every, *admits_params, limit)).fetchall()
        return [ScoredChunk(chunk_from_row(row), float(row[-1])) for row in rows]

    def _search_admitted(self, conn, score, score_params, weighted, audiences, limit) -> list[ScoredChunk]:
        """The rows a selective filter admits, read first through its GIN index (a materialized CTE: the planner
        cannot start from the words instead), each matched by every word of the query and, if it matches, scored as
        it is read (the CTE keeps ids and scores, not keyword text), then ranked: the work is bounded by the rows
        admitted, whatever the words' frequencies in the whole table."""
        admits, admits_params = audience_filter(audiences)
        statement = sql.SQL(
            """WITH admitted AS MATERIALIZED (SELECT id, CASE WHEN tsv @@ to_tsquery('simple', %s) THEN {score} END
                                              AS score FROM {t} WHERE true{admits}),
                    scored AS (SELECT id, score FROM admitted WHERE score IS NOT NULL ORDER BY score DESC LIMIT %s)
               SELECT {cols}, scored.score FROM scored JOIN {t} c USING (id) ORDER BY scored.score DESC"""
        ).format(score=score, admits=admits, t=self._table,
                 cols=sql.SQL(", ").join(sql.SQL("c.") + sql.Identifier(c) for c in COLUMNS.split(", ")))
        every = " | ".join(_quote_lexeme(w) for w in weighted)
        rows = conn.execute(statement, (every, *score_params, *admits_params, limit)).fetchall()
        return [ScoredChunk(chunk_from_row(row), float(row[-1])) for row in rows]

    def _rarest(self, words: Sequence[str], frequencies: dict[str, int]) -> list[str]:
        """The rarest words whose rows add up to at most ``keyword_rows`` (at least the rarest one)."""
        selecting, matching = [], 0
        for word in sorted(words, key=frequencies.__getitem__):
            if selecting and matching + frequencies[word] > self._keyword_rows:
                break
            selecting.append(word)
            matching += frequencies[word]
        return selecting


def _quote_lexeme(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"
