"""The keyword side of ``PgVectorStore``: an IDF-weighted full-text search over the table's generated ``tsvector``.

Postgres' own ``ts_rank`` knows nothing of term rarity, so each query lexeme's rank is weighted by its inverse
document frequency, read from a small statistics table (``{collection}_lexemes``) that ``refresh`` recomputes after
a batch of writes. Also the row layout both sides read (``COLUMNS``, ``chunk_from_row``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from psycopg import sql
from psycopg_pool import ConnectionPool

from askflow.domain.model import Chunk, ScoredChunk, SourceKind

COLUMNS = "id, doc_id, chunk_index, content, title, section, url, sha, kind, metadata"


def chunk_from_row(row: Sequence) -> Chunk:
    """A chunk from a row that starts with ``COLUMNS``."""
    _id, doc_id, index, content, title, section, url, sha, kind, metadata = row[:10]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return Chunk(
        doc_id=doc_id, index=index, content=content, title=title, section=section, url=url, sha=sha,
        kind=SourceKind(kind), metadata=metadata or {},
    )


class PgKeywordIndex:
    """:param pool: the store's connection pool (opened on first use). :param keyword_rows: about how many rows a
    search may rank (see ``search``)."""

    def __init__(self, *, pool: Callable[[], ConnectionPool], collection: str, keyword_rows: int) -> None:
        self._pool = pool
        self._collection = collection
        self._table = sql.Identifier(collection)
        self._stats = sql.Identifier(f"{collection}_lexemes")
        self._keyword_rows = keyword_rows

    def ddl(self) -> sql.Composed:
        return sql.SQL("CREATE TABLE IF NOT EXISTS {s} (word text PRIMARY KEY, ndoc integer NOT NULL)").format(
            s=self._stats)

    def refresh(self) -> None:
        """Recompute lexeme document frequencies: one pass over the table, run once after a batch of writes.

        The row with the empty word (never a lexeme) holds the number of chunks.
        """
        with self._pool().connection() as conn, conn.transaction():
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

    def search(self, text: str, *, limit: int) -> list[ScoredChunk]:
        """BM25-like: each query lexeme's ``ts_rank`` weighted by its IDF, summed over the lexemes.

        Postgres ranks every row that matches, so the cost grows with how many rows the query's words occur in.
        Rows are selected by the query's rarest lexemes, as many as keep the rows to rank under ``keyword_rows``
        (at least one); the commoner ones still add to the score of the rows selected. Like Lucene's common-terms
        query: on a corpus of no more rows than the budget nothing changes, and on a large one a word that occurs
        everywhere ("dag", "task") no longer makes the search rank the whole table.
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
                cols=sql.SQL(", ").join(sql.SQL("c.") + sql.Identifier(c) for c in COLUMNS.split(", ")),
            )
            selecting = list(weighted) if total <= self._keyword_rows else self._rarest(weighted, frequencies)
            disjunction = " | ".join(_quote_lexeme(w) for w in selecting)
            rows = conn.execute(statement, (*score_params, disjunction, limit)).fetchall()
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
