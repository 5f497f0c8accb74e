"""Where the serving pair (embedding model + collection) is kept: ``PgServingIndex`` in the vector store's own
PostgreSQL database (pgvector deployments), ``FirestoreServingIndex`` in Firestore (Weaviate deployments). Either is
one row or document per deployment, written whole, so a reader sees the old pair or the new one, never a mix."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from askflow.domain.model import Serving
from askflow.ports import ServingIndex


class PgServingIndex(ServingIndex):
    """:param name: the deployment's base collection name (from settings): one serving pair per deployment."""

    def __init__(self, *, url: str, name: str) -> None:
        self._url = url
        self._name = name

    def get(self) -> Serving | None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            self._ensure(conn)
            row = conn.execute("SELECT record FROM askflow_serving WHERE name = %s", (self._name,)).fetchone()
        return Serving.model_validate(row[0]) if row else None

    def switch(self, serving: Serving) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            self._ensure(conn)
            conn.execute(
                "INSERT INTO askflow_serving (name, record) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                (self._name, Jsonb(serving.model_dump(mode="json"))),
            )

    @staticmethod
    def _ensure(conn: psycopg.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS askflow_serving (name text PRIMARY KEY, record jsonb NOT NULL)")


class FirestoreServingIndex(ServingIndex):
    def __init__(self, *, client: Any, collection: str, name: str) -> None:
        self._ref = client.collection(collection).document(name)

    def get(self) -> Serving | None:
        snapshot = self._ref.get()
        return Serving.model_validate(snapshot.to_dict()) if snapshot.exists else None

    def switch(self, serving: Serving) -> None:
        self._ref.set(serving.model_dump())
