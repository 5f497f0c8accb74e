"""The composition root: the only place that picks concrete adapters from settings.

Every component is built on first use, so an entry point pays only for what it touches (the HTTPS ask function
never loads the vector store or an LLM client).
"""

from __future__ import annotations

from functools import cached_property

from askflow.config import Settings
from askflow.domain.errors import ConfigurationError
from askflow.ports import ChatModel, Embeddings, EventBus, RequestStore, VectorStore

VECTOR_STORES = ("pgvector", "weaviate")
EMBEDDING_PROVIDERS = ("local", "openai")
OPENAI_EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                               "text-embedding-ada-002": 1536}


class Components:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    # -- Google Cloud ------------------------------------------------------------------------------------------
    @cached_property
    def requests(self) -> RequestStore:
        from google.cloud import firestore

        from askflow.adapters.firestore_requests import FirestoreRequestStore

        client = firestore.Client(project=self.settings.project_id)
        return FirestoreRequestStore(
            client=client, collection=self.settings.requests_collection,
            runs_collection=self.settings.evaluation_runs_collection,
        )

    @cached_property
    def events(self) -> EventBus:
        from google.cloud import pubsub_v1

        from askflow.adapters.pubsub_events import PubSubEventBus

        # one message per call, sent at once: the default batching would hold each question up to 10 ms
        publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
        return PubSubEventBus(publisher=publisher, project_id=self.settings.project_id)

    # -- retrieval ---------------------------------------------------------------------------------------------
    @cached_property
    def store(self) -> VectorStore:
        return self.vector_store(self.settings.collection)

    def vector_store(self, collection: str) -> VectorStore:
        s = self.settings
        if s.vector_store == "pgvector":
            from askflow.adapters.pgvector_store import PgVectorStore

            return PgVectorStore(url=self.database_url, collection=collection, ef_search=s.pgvector_ef_search,
                                 keyword_rows=s.pgvector_keyword_rows)
        if s.vector_store == "weaviate":
            if not s.weaviate_url:
                raise ConfigurationError("ASKFLOW_VECTOR_STORE=weaviate needs ASKFLOW_WEAVIATE_URL")
            from askflow.adapters.weaviate_store import WeaviateVectorStore

            key = s.weaviate_api_key.get_secret_value() if s.weaviate_api_key else None
            return WeaviateVectorStore(url=s.weaviate_url, api_key=key, collection=collection)
        raise ConfigurationError(f"unknown vector store {s.vector_store!r}; choose one of {VECTOR_STORES}")

    @cached_property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        from askflow.adapters.embedded_postgres import embedded_postgres_url

        return embedded_postgres_url(self.settings.data_dir)

    @cached_property
    def embeddings(self) -> Embeddings:
        s = self.settings
        if s.embedding_provider == "local":
            from askflow.adapters.embeddings import LocalEmbeddings

            return LocalEmbeddings(model=s.embedding_model, cache_dir=s.data_dir / "models")
        if s.embedding_provider == "openai":
            from askflow.adapters.embeddings import OpenAIEmbeddings

            dimension = OPENAI_EMBEDDING_DIMENSIONS.get(s.embedding_model)
            if dimension is None:
                raise ConfigurationError(
                    f"unknown embedding model {s.embedding_model!r}; "
                    f"choose one of {', '.join(OPENAI_EMBEDDING_DIMENSIONS)}"
                )
            return OpenAIEmbeddings(
                client=self.openai_client, model=s.embedding_model, dimension=dimension, retrying=self.retrying
            )
        raise ConfigurationError(
            f"unknown embedding provider {s.embedding_provider!r}; choose one of {EMBEDDING_PROVIDERS}"
        )

    @cached_property
    def retriever(self):
        return self.retriever_for(self.store)

    def retriever_for(self, store: VectorStore):
        """The production retrieval settings over any store (the evaluation uses its own collection)."""
        from askflow.retrieval import Retriever

        return Retriever(
            store=store, embeddings=self.embeddings, alpha=self.settings.hybrid_alpha,
            candidates=self.settings.retrieval_candidates,
        )

    # -- models ------------------------------------------------------------------------------------------------
    @cached_property
    def openai_client(self):
        import openai

        s = self.settings
        return openai.OpenAI(
            api_key=s.openai_api_key.get_secret_value() if s.openai_api_key else "unused",
            base_url=s.openai_base_url,
            timeout=s.llm_timeout_s,
            max_retries=0,  # retries are tenacity's, with backoff we choose
        )

    @cached_property
    def retrying(self):
        from askflow.adapters.openai_chat import retrying_call

        return retrying_call(attempts=self.settings.llm_max_attempts, backoff_max_s=self.settings.llm_backoff_max_s)

    def chat_model(self, model: str) -> ChatModel | None:
        if not self.settings.llm_configured:
            return None
        from askflow.adapters.openai_chat import OpenAIChatModel

        return OpenAIChatModel(client=self.openai_client, model=model, retrying=self.retrying)

    @cached_property
    def answerer(self):
        from askflow.answering import Answerer

        s = self.settings
        return Answerer(
            retriever=self.retriever,
            cheap_model=self.chat_model(s.cheap_model),
            strong_model=self.chat_model(s.strong_model),
            rewordings=s.rewordings,
            sources=s.sources_per_answer,
        )

    @cached_property
    def slack_replies(self):
        """``None`` when no Slack bot token is configured (web-only deployments)."""
        if self.settings.slack_bot_token is None:
            return None
        from askflow.adapters.slack_replies import SlackReplies

        return SlackReplies(token=self.settings.slack_bot_token.get_secret_value(),
                            base_url=self.settings.slack_api_url)

    @cached_property
    def slack_app(self):
        from askflow.entrypoints.slack_app import build_app

        return build_app(self)

    @cached_property
    def grader(self):
        from askflow.grading import HeuristicGrader, LLMGrader

        model = self.chat_model(self.settings.cheap_model)
        return LLMGrader(model=model) if model is not None else HeuristicGrader()

    def strategy(self):
        from askflow.ingest.chunking import ChunkingStrategy

        s = self.settings
        return ChunkingStrategy(s.splitter, s.chunk_size, s.chunk_overlap)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()


def bootstrap(settings: Settings | None = None) -> Components:
    return Components(settings)
