"""WeaviateVectorStore: the production vector store (weaviate-client v4).

A collection with ``content``, ``source`` (doc id), ``url``, ``title``, ``section``, ``sha``, ``kind``, ``chunk_index``
and ``metadata`` (JSON text), ``audiences`` (who may read it: a text array every query filters on, inside the query,
with the HNSW index's ACORN filter strategy so a selective filter still fills the result), ``context`` (what a model
wrote to place the chunk in its document, searched by keywords with the content), its provenance
(``source_location``, ``source_version``, ``ingested_at`` as ISO 8601 text, ``ingest_run``: not searched), vectors
supplied by askflow (no server-side vectorizer), hybrid search with ``alpha``, batch upserts keyed by the chunks'
deterministic UUIDs. Objects stored before audiences existed have none and are found by admins only; before
contexts, none either; before lineage, no provenance (the properties are added to the collection).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Sequence
from urllib.parse import urlparse

from askflow.domain.model import Chunk, Provenance, ScoredChunk, SourceKind
from askflow.ports import VectorStore

_PROPERTIES = ("content", "source", "url", "title", "section", "sha", "kind", "chunk_index", "metadata", "audiences",
               "context", "source_location", "source_version", "ingested_at", "ingest_run")
_PROVENANCE = ("source_location", "source_version", "ingested_at", "ingest_run")


class WeaviateVectorStore(VectorStore):
    def __init__(self, *, url: str, api_key: str | None, collection: str) -> None:
        self._url = url
        self._api_key = api_key
        self._name = _class_name(collection)
        self._client = None
        self._lock = threading.Lock()

    def _connected(self):
        import weaviate
        from weaviate.classes.init import Auth

        with self._lock:
            if self._client is None:
                parsed = urlparse(self._url)
                secure = parsed.scheme == "https"
                self._client = weaviate.connect_to_custom(
                    http_host=parsed.hostname, http_port=parsed.port or (443 if secure else 8080),
                    http_secure=secure, grpc_host=parsed.hostname, grpc_port=50051, grpc_secure=secure,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                )
            return self._client

    def _collection(self):
        return self._connected().collections.get(self._name)

    def ensure_collection(self, dimension: int) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorFilterStrategy

        client = self._connected()
        audiences = Property(name="audiences", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.FIELD)
        context = Property(name="context", data_type=DataType.TEXT, tokenization=Tokenization.WORD)
        provenance = [Property(name=name, data_type=DataType.TEXT, index_searchable=False) for name in _PROVENANCE]
        if client.collections.exists(self._name):
            collection = client.collections.get(self._name)
            named = {p.name for p in collection.config.get().properties}
            for missing in (p for p in (audiences, context, *provenance) if p.name not in named):
                collection.config.add_property(missing)  # a collection made before audiences, contexts or lineage
            return
        text = lambda name, tokenize=Tokenization.WORD: Property(  # noqa: E731
            name=name, data_type=DataType.TEXT, tokenization=tokenize
        )
        client.collections.create(
            self._name,
            vector_config=Configure.Vectors.self_provided(vector_index_config=Configure.VectorIndex.hnsw(
                filter_strategy=VectorFilterStrategy.ACORN)),
            properties=[
                text("content"), text("title"), text("section"),
                Property(name="source", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                Property(name="url", data_type=DataType.TEXT, skip_vectorization=True),
                Property(name="sha", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                Property(name="kind", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                Property(name="chunk_index", data_type=DataType.INT),
                Property(name="metadata", data_type=DataType.TEXT, index_searchable=False),
                audiences,
                context,
                *provenance,
            ],
        )

    def upsert(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> int:
        collection = self._collection()
        with collection.batch.fixed_size(batch_size=200) as batch:
            for chunk, vector in zip(chunks, vectors, strict=True):
                batch.add_object(properties=_properties(chunk), vector=list(vector), uuid=chunk.chunk_id)
        failed = collection.batch.failed_objects
        if failed:
            raise RuntimeError(f"Weaviate rejected {len(failed)} objects: {failed[0].message}")
        return len(chunks)

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        from weaviate.classes.query import Filter

        if not doc_ids:
            return 0
        result = self._collection().data.delete_many(where=Filter.by_property("source").contains_any(list(doc_ids)))
        return result.successful

    def fingerprints(self, doc_ids: Sequence[str]) -> dict[str, str]:
        from weaviate.classes.query import Filter

        fingerprints: dict[str, str] = {}
        wanted = sorted(set(doc_ids))
        for start in range(0, len(wanted), 100):  # a filter per hundred ids; the first chunk of each is enough
            response = self._collection().query.fetch_objects(
                filters=Filter.by_property("source").contains_any(wanted[start : start + 100])
                & Filter.by_property("chunk_index").equal(0),
                limit=100, return_properties=["source", "sha"],
            )
            fingerprints |= {obj.properties["source"]: obj.properties["sha"] for obj in response.objects}
        return fingerprints

    def document_chunks(self, doc_id: str, *, audiences: Sequence[str] | None) -> list[Chunk]:
        from weaviate.classes.query import Filter

        # Weaviate's cursor cannot be filtered: one query, up to its default result cap (QUERY_MAXIMUM_RESULTS)
        response = self._collection().query.fetch_objects(
            filters=_admitting(Filter.by_property("source").equal(doc_id), audiences), limit=10_000)
        return sorted((_chunk(obj.properties) for obj in response.objects), key=lambda chunk: chunk.index)

    def document_fingerprints(self, prefix: str) -> dict[str, str]:
        fingerprints = {}
        for obj in self._collection().iterator(return_properties=["source", "sha"]):
            source = obj.properties["source"]
            if source.startswith(prefix):
                fingerprints[source] = obj.properties["sha"]
        return fingerprints

    def document_metadata(self, prefix: str) -> dict[str, dict]:
        metadata: dict[str, dict] = {}
        for obj in self._collection().iterator(return_properties=["source", "chunk_index", "metadata"]):
            source = obj.properties["source"]
            if source.startswith(prefix) and (source not in metadata or obj.properties["chunk_index"] == 0):
                metadata[source] = json.loads(obj.properties.get("metadata") or "{}")
        return metadata

    def hybrid_search(
        self, text: str, vector: Sequence[float], *, limit: int, alpha: float, audiences: Sequence[str] | None
    ) -> list[ScoredChunk]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        response = self._collection().query.hybrid(
            query=text, vector=list(vector), alpha=alpha, limit=limit, fusion_type=HybridFusion.RELATIVE_SCORE,
            query_properties=list(_QUERY_PROPERTIES), return_metadata=MetadataQuery(score=True),
            filters=_admitting(None, audiences),
        )
        return [ScoredChunk(_chunk(obj.properties), float(obj.metadata.score or 0.0)) for obj in response.objects]

    def keyword_search(self, text: str, *, limit: int, audiences: Sequence[str] | None) -> list[ScoredChunk]:
        from weaviate.classes.query import MetadataQuery

        response = self._collection().query.bm25(
            query=text, limit=limit, query_properties=list(_QUERY_PROPERTIES),
            return_metadata=MetadataQuery(score=True), filters=_admitting(None, audiences),
        )
        return [ScoredChunk(_chunk(obj.properties), float(obj.metadata.score or 0.0)) for obj in response.objects]

    def relabel(self, doc_ids: Sequence[str], audiences: Sequence[str]) -> int:
        from weaviate.classes.query import Filter

        labels, changed = sorted(set(audiences)), 0
        collection = self._collection()
        for doc_id in dict.fromkeys(doc_ids):
            response = collection.query.fetch_objects(filters=Filter.by_property("source").equal(doc_id),
                                                      limit=10_000, return_properties=["audiences"])
            for obj in response.objects:
                if sorted(obj.properties.get("audiences") or []) != labels:
                    collection.data.update(uuid=obj.uuid, properties={"audiences": labels})
                    changed += 1
        return changed

    def audiences_of(self, doc_ids: Sequence[str]) -> dict[str, list[str] | None]:
        from weaviate.classes.query import Filter

        found: dict[str, list[str] | None] = {}
        wanted = sorted(set(doc_ids))
        for start in range(0, len(wanted), 100):  # as ``fingerprints``: the first chunk of each
            response = self._collection().query.fetch_objects(
                filters=Filter.by_property("source").contains_any(wanted[start : start + 100])
                & Filter.by_property("chunk_index").equal(0),
                limit=100, return_properties=["source", "audiences"],
            )
            found |= {obj.properties["source"]: obj.properties.get("audiences") or None for obj in response.objects}
        return found

    def scope_audiences(self, prefix: str) -> list[str] | None:
        from weaviate.classes.query import Filter

        response = self._collection().query.fetch_objects(
            filters=Filter.by_property("source").like(f"{prefix}*"), limit=1, return_properties=["audiences"])
        return (response.objects[0].properties.get("audiences") or None) if response.objects else None

    def document_audiences(self, prefix: str) -> dict[str, list[str] | None]:
        found: dict[str, list[str] | None] = {}
        for obj in self._collection().iterator(return_properties=["source", "audiences"]):
            if obj.properties["source"].startswith(prefix):
                found[obj.properties["source"]] = obj.properties.get("audiences")
        return found

    def chunks(self, *, after: str | None, limit: int) -> list[Chunk]:
        response = self._collection().query.fetch_objects(after=after, limit=limit)  # cursor: uuid order
        return [_chunk(obj.properties) for obj in response.objects]

    def count(self) -> int:
        return self._collection().aggregate.over_all(total_count=True).total_count

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


_QUERY_PROPERTIES = ("title^2", "section^2", "context", "content")  # headings weigh twice the body in BM25


def _class_name(collection: str) -> str:
    """Weaviate collection names are capitalised GraphQL names."""
    cleaned = "".join(part.capitalize() for part in collection.replace("-", "_").split("_") if part)
    return cleaned or "Askflow"


def _properties(chunk: Chunk) -> dict:
    return {
        "content": chunk.content, "source": chunk.doc_id, "url": chunk.url, "title": chunk.title,
        "section": chunk.section, "sha": chunk.sha, "kind": chunk.kind.value, "chunk_index": chunk.index,
        "metadata": json.dumps(chunk.metadata), "audiences": list(chunk.audiences or []), "context": chunk.context,
    } | _provenance_properties(chunk.provenance)


def _provenance_properties(provenance: Provenance | None) -> dict:
    """A chunk's provenance as the collection's text properties (none when it has none)."""
    if provenance is None:
        return {}
    return {"source_location": provenance.location, "source_version": provenance.version,
            "ingested_at": provenance.ingested_at.isoformat() if provenance.ingested_at else "",
            "ingest_run": provenance.run}


def _provenance_of(properties: dict) -> Provenance | None:
    if not any(properties.get(name) for name in _PROVENANCE):
        return None
    at = properties.get("ingested_at")
    return Provenance(location=properties.get("source_location") or "", version=properties.get("source_version") or "",
                      ingested_at=dt.datetime.fromisoformat(at) if at else None, run=properties.get("ingest_run") or "")


def _chunk(properties: dict) -> Chunk:
    return Chunk(
        doc_id=properties["source"], index=int(properties["chunk_index"]), content=properties["content"],
        title=properties["title"], section=properties["section"], url=properties["url"], sha=properties["sha"],
        kind=SourceKind(properties["kind"]), metadata=json.loads(properties.get("metadata") or "{}"),
        audiences=tuple(properties["audiences"]) if properties.get("audiences") else None,
        context=properties.get("context") or "", provenance=_provenance_of(properties),
    )


def _admitting(where, audiences: Sequence[str] | None):
    """``where`` (a Weaviate filter or ``None``) and, with ``audiences``, the filter admitting only objects that name
    one of them (an object with none never matches); ``None`` for no filter at all."""
    from weaviate.classes.query import Filter

    if audiences is None:
        return where
    admitted = Filter.by_property("audiences").contains_any(list(audiences))
    return admitted if where is None else where & admitted
