"""The composition root: the only place that picks concrete adapters from settings and builds SDK clients.

Every component is built on first use, so an entry point pays only for what it touches (the HTTPS ask function
never loads the vector store or an LLM client). ``Components`` is a context manager: leaving it closes what it
opened (``with bootstrap() as components: ...``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from askflow.config import Settings, load_settings
from askflow.domain.errors import ConfigurationError, InvalidInput
from askflow.domain.model import Serving
from askflow.ports import (
    ChatModel,
    DocsLocation,
    Embeddings,
    EmbeddingTrainer,
    EvaluationRuns,
    EventBus,
    FinetuneRuns,
    GroupDirectory,
    LearnedSignals,
    RequestStore,
    Reranker,
    ServingIndex,
    VectorStore,
)

NO_CREDENTIALS = ("run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                  "service account key file (STORAGE_EMULATOR_HOST for a local fake-gcs-server)")
OPENAI_EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
                               "text-embedding-ada-002": 1536}


class Components:
    """What an entry point needs, built from settings on first use. The vector store, the embedding model and the
    answerer are the serving pair's (``serving()``), which fine-tuning may switch while a process runs."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._serving: tuple[float, Serving] | None = None
        self._pairs: dict[tuple[str, str], tuple[VectorStore, Embeddings]] = {}
        self._answerers: dict[tuple[str, str], Any] = {}
        self._lock = threading.RLock()  # the worker answers several pushes at once: one store per pair, ever
        if self.settings.tracing != "none":
            from askflow.adapters.telemetry import configure_tracing

            configure_tracing(self.settings.tracing, service=self.settings.service_name,
                              project_id=self.settings.project_id)

    def __enter__(self) -> Components:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for store, _ in self._pairs.values():  # what holds connections; the rest are built per call
            store.close()
        if self.__dict__.get("signals") is not None:
            self.signals.close()
        if self.__dict__.get("reranker") is not None:
            self.reranker.close()
        if "firestore_client" in self.__dict__:
            self.firestore_client.close()
        if self.__dict__.get("group_directory") is not None:
            self.group_directory.close()

    # -- Google Cloud ------------------------------------------------------------------------------------------
    @cached_property
    def firestore_client(self):
        from google.cloud import firestore

        return firestore.Client(project=self.settings.project_id)

    @cached_property
    def requests(self) -> RequestStore:
        from askflow.adapters.firestore_requests import FirestoreRequestStore

        return FirestoreRequestStore(client=self.firestore_client, collection=self.settings.requests_collection,
                                     progress_collection=self.settings.request_progress_collection,
                                     audit_collection=self.settings.audit_collection)

    @cached_property
    def evaluation_runs(self) -> EvaluationRuns:
        from askflow.adapters.firestore_requests import FirestoreRuns

        return FirestoreRuns(client=self.firestore_client, collection=self.settings.evaluation_runs_collection)

    @cached_property
    def events(self) -> EventBus:
        from google.cloud import pubsub_v1

        from askflow.adapters.pubsub_events import PubSubEventBus

        # one message per call, sent at once: the default batching would hold each question up to 10 ms
        publisher = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1))
        return PubSubEventBus(publisher=publisher, project_id=self.settings.project_id)

    @cached_property
    def storage_client(self):
        """google-cloud-storage's client; no Google credentials is a ``ConfigurationError`` saying what to do."""
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        try:
            return storage.Client()
        except (DefaultCredentialsError, OSError) as error:
            raise ConfigurationError(f"reading gs:// needs Google credentials: {NO_CREDENTIALS}") from error

    @cached_property
    def group_directory(self) -> GroupDirectory | None:
        """Who is in which Google group (the Cloud Identity Groups API), for the ``group:`` rules of
        ``ASKFLOW_IAP_AUDIENCE_RULES``; ``None`` when no rule names a group. Built on the first group rule an IAP
        identity meets, with the application default credentials."""
        if not self.settings.iap_group_rules:
            return None
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.auth.transport.requests import AuthorizedSession

        from askflow.adapters.cloud_identity_groups import CloudIdentityGroups

        try:
            credentials, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/cloud-identity.groups.readonly"])
        except DefaultCredentialsError as error:
            raise ConfigurationError(f"a group: rule of ASKFLOW_IAP_AUDIENCE_RULES needs Google credentials: "
                                     f"{NO_CREDENTIALS}") from error
        return CloudIdentityGroups(session=AuthorizedSession(credentials), base_url=self.settings.cloud_identity_url,
                                   timeout_s=self.settings.cloud_identity_timeout_s)

    # -- documents ---------------------------------------------------------------------------------------------
    def location(self, spec: str, *, cache_dir: Path | None = None) -> DocsLocation:
        """A documentation location by its one-string name: a folder, ``gs://BUCKET/PREFIX``,
        ``git+URL[@REF][#subdirectory=DIR]`` or a website's ``https://.../sitemap.xml`` or start URL
        (``askflow.ingest.sources.locations``)."""
        spec = str(spec).strip()
        if not spec:
            raise InvalidInput("a documentation location is empty")
        if spec.startswith("gs://"):
            from askflow.adapters.gcs_documents import GcsLocation

            return GcsLocation.parse(spec, storage=lambda: self.storage_client)
        if spec.startswith("git+"):
            from askflow.adapters.git_documents import GitLocation

            return GitLocation.parse(spec, cache_dir=cache_dir or self.settings.data_dir / "git")  # not /tmp
        if spec.startswith(("https://", "http://")):
            from askflow.adapters.web_documents import WebsiteLocation

            s = self.settings
            return WebsiteLocation.parse(
                spec, cache_dir=cache_dir or s.data_dir / "web", user_agent=s.web_user_agent,
                rate_limit_s=s.web_rate_limit_s, timeout_s=s.web_timeout_s, max_page_bytes=s.web_max_page_bytes,
                max_pages=s.web_max_pages, main_selector=s.web_main_selector,
                max_sitemap_bytes=s.web_max_sitemap_bytes, allowed_hosts=tuple(s.web_allowed_hosts),
                allowed_networks=tuple(s.web_allowed_networks), ignored_query_params=tuple(s.web_ignored_query_params))
        from askflow.ingest.sources.locations import FolderLocation

        return FolderLocation(Path(spec))

    def strategy(self, **overrides: Any):
        """The chunking strategy of the settings, with ``overrides`` (``splitter``, ``chunk_size``,
        ``chunk_overlap``) where not ``None``."""
        from askflow.ingest.chunking import ChunkingStrategy

        s = self.settings
        chosen = {"splitter": s.splitter, "chunk_size": s.chunk_size, "chunk_overlap": s.chunk_overlap}
        chosen |= {key: value for key, value in overrides.items() if value is not None}
        try:
            return ChunkingStrategy(**chosen)
        except ValueError as error:
            raise InvalidInput(str(error)) from error

    @cached_property
    def github_client(self):
        """PyGithub on the configured base URL (github.com or Enterprise); ``GithubRetry`` retries rate limits and
        5xx with backoff."""
        from github import Auth, Github, GithubRetry

        token = self.settings.github_token
        return Github(base_url=self.settings.github_api_url,
                      auth=Auth.Token(token.get_secret_value()) if token else None,
                      retry=GithubRetry(total=5, backoff_factor=0.2), seconds_between_requests=0.25)

    # -- the serving pair: which embedding model and collection answer questions now ---------------------------
    @cached_property
    def serving_index(self) -> ServingIndex:
        s = self.settings
        if s.vector_store == "weaviate":
            from askflow.adapters.serving_index import FirestoreServingIndex

            return FirestoreServingIndex(client=self.firestore_client, collection=s.serving_collection,
                                         name=s.collection)
        from askflow.adapters.serving_index import PgServingIndex

        return PgServingIndex(url=self.database_url, name=s.collection)

    def serving(self) -> Serving:
        """The pair promoted by fine-tuning when it derives from the configured model; otherwise the configured
        ``ASKFLOW_EMBEDDING_MODEL`` and ``ASKFLOW_COLLECTION``. Read again after ``serving_refresh_s``."""
        with self._lock:
            now = time.monotonic()
            if self._serving is None or now - self._serving[0] >= self.settings.serving_refresh_s:
                s = self.settings
                configured = Serving(model=s.embedding_model, collection=s.collection, base_model=s.embedding_model)
                promoted = self.serving_index.get()
                usable = promoted is not None and promoted.base_model == s.embedding_model
                self._serving = (now, promoted if usable else configured)
            return self._serving[1]

    def _pair(self, serving: Serving) -> tuple[VectorStore, Embeddings]:
        with self._lock:
            key = (serving.model, serving.collection)
            if key not in self._pairs:
                self._pairs[key] = (self.vector_store(serving.collection), self.embeddings_for(serving.model))
            return self._pairs[key]

    @property
    def store(self) -> VectorStore:
        """The serving collection."""
        return self._pair(self.serving())[0]

    # -- retrieval ---------------------------------------------------------------------------------------------
    def vector_store(self, collection: str) -> VectorStore:
        """A store over ``collection``, owned by the caller (close it); ``store`` is the serving one."""
        s = self.settings
        if s.vector_store == "weaviate":
            if not s.weaviate_url:
                raise ConfigurationError("ASKFLOW_VECTOR_STORE=weaviate needs ASKFLOW_WEAVIATE_URL")
            from askflow.adapters.weaviate_store import WeaviateVectorStore

            key = s.weaviate_api_key.get_secret_value() if s.weaviate_api_key else None
            return WeaviateVectorStore(url=s.weaviate_url, api_key=key, collection=collection)
        from askflow.adapters.pgvector_store import PgVectorStore

        return PgVectorStore(url=self.database_url, collection=collection, ef_search=s.pgvector_ef_search,
                             keyword_rows=s.pgvector_keyword_rows)

    @cached_property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        from askflow.adapters.embedded_postgres import embedded_postgres_url

        return embedded_postgres_url(self.settings.data_dir)

    @property
    def embeddings(self) -> Embeddings:
        """The serving embedding model."""
        return self._pair(self.serving())[1]

    def embeddings_for(self, model: str) -> Embeddings:
        s = self.settings
        if s.embedding_provider == "openai":
            from askflow.adapters.openai_wire import OpenAIEmbeddings

            dimension = OPENAI_EMBEDDING_DIMENSIONS.get(model)
            if dimension is None:
                raise ConfigurationError(
                    f"ASKFLOW_EMBEDDING_MODEL: unknown OpenAI embedding model {model!r}; "
                    f"choose one of {', '.join(OPENAI_EMBEDDING_DIMENSIONS)}"
                )
            return OpenAIEmbeddings(client=self.openai_client, model=model, dimension=dimension,
                                    retrying=self.retrying)
        from askflow.adapters.local_embeddings import LocalEmbeddings

        return LocalEmbeddings(model=model, cache_dir=self.models_dir)

    @property
    def models_dir(self) -> Path:
        """Where local models are unpacked and fine-tuned ones saved."""
        return self.settings.data_dir / "models"

    def retriever_for(self, store: VectorStore, embeddings: Embeddings | None = None, *,
                      signals: LearnedSignals | None = None, collection: str | None = None, rerank: bool = False):
        """The production retrieval settings over any store and model (the evaluation uses its own collection),
        with what ``signals`` learned about ``collection`` (default: the serving one) applied to the ranking
        (unless ``ASKFLOW_LEARNING`` is off); with ``rerank``, the configured reranker (``ASKFLOW_RERANKER``) reorders
        the fused top documents first."""
        from askflow.retrieval.retriever import ModelReranking, Retriever

        s = self.settings
        model_reranking = None
        if rerank and self.reranker is not None:
            model_reranking = ModelReranking(
                reranker=self.reranker, top_n=s.rerank_top_n, max_chars=s.rerank_max_chars,
                timeout_s=s.rerank_timeout_s, max_attempts=s.rerank_max_attempts,
                withheld_audiences=s.withheld_audiences, prices=self.prices)
        embeddings = embeddings or self.embeddings
        reranking = None
        if signals is not None and s.learning:
            from askflow.learning.ranking import LearnedRanking

            reranking = LearnedRanking(
                signals=signals, store=store, collection=collection or self.serving().collection,
                embedding_model=embeddings.name, prior_weight=s.prior_weight, prior_strength=s.prior_strength,
                association_weight=s.association_weight, min_similarity=s.association_min_similarity)
        return Retriever(store=store, embeddings=embeddings, alpha=s.hybrid_alpha,
                         candidates=s.retrieval_candidates, reranking=reranking, model_reranking=model_reranking)

    @cached_property
    def reranker(self) -> Reranker | None:
        """The reranking model ``ASKFLOW_RERANKER`` names (``None``: none)."""
        s = self.settings
        if s.reranker == "cohere":
            import httpx

            from askflow.adapters.cohere_rerank import CohereReranker

            key = s.rerank_api_key.get_secret_value() if s.rerank_api_key else None
            client = httpx.Client(headers={"Authorization": f"Bearer {key}"} if key else {},
                                  timeout=s.rerank_timeout_s)
            return CohereReranker(client=client, url=s.rerank_url, model=s.reranker_model)
        if s.reranker == "vertex":
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError
            from google.auth.transport.requests import AuthorizedSession

            from askflow.adapters.vertex_ranking import VertexReranker

            try:
                credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
            except DefaultCredentialsError as error:
                raise ConfigurationError(f"ASKFLOW_RERANKER=vertex needs Google credentials: {NO_CREDENTIALS}") \
                    from error
            return VertexReranker(session=AuthorizedSession(credentials), base_url=s.vertex_ranking_url,
                                  project=s.project_id, ranking_config=s.vertex_ranking_config,
                                  model=s.reranker_model)
        return None

    def docs_for_agents(self):
        """(retriever, store) the MCP tools search and read: ``ASKFLOW_MCP_COLLECTION`` with the configured embedding
        model, or else the serving pair; with what users taught about that collection."""
        s = self.settings
        serving = self.serving() if s.mcp_collection is None else Serving(
            model=s.embedding_model, collection=s.mcp_collection, base_model=s.embedding_model)
        store, embeddings = self._pair(serving)
        return self.retriever_for(store, embeddings, signals=self.signals, collection=serving.collection,
                                  rerank=True), store

    # -- learning from users -----------------------------------------------------------------------------------
    @cached_property
    def signals(self) -> LearnedSignals | None:
        """What graded answers taught (``learned_collection``), kept in PostgreSQL: the vector store's own database
        with pgvector, ``ASKFLOW_DATABASE_URL`` (Cloud SQL) with Weaviate; ``None`` (nothing learned, nothing
        served from the cache) when a Weaviate deployment has no database."""
        if self.settings.vector_store == "weaviate" and not self.settings.database_url:
            import logging

            logging.getLogger(__name__).warning(
                "learning from users is off: ASKFLOW_VECTOR_STORE=weaviate keeps learned signals in PostgreSQL; "
                "set ASKFLOW_DATABASE_URL")
            return None
        return self.learned_signals(self.settings.learned_collection)

    def learned_signals(self, table: str) -> LearnedSignals:
        """Learned signals in ``table``, owned by the caller (close them); ``signals`` are the serving ones."""
        from askflow.adapters.pgvector_learned import PgLearnedSignals

        return PgLearnedSignals(url=self.database_url, table=table)

    def answerer_for(self, store: VectorStore, embeddings: Embeddings, *, collection: str,
                     signals: LearnedSignals | None, requests: Callable[[], RequestStore] | None = None):
        """An answerer over ``store``, with what ``signals`` learned (ranking and the verified-answer cache, which
        serves only answers whose request ``requests`` still holds verified)."""
        from askflow.learning.cache import AnswerCache
        from askflow.service_layer.answering import Answerer

        s = self.settings
        cache = None
        if signals is not None and s.learning and s.cache:
            cache = AnswerCache(signals=signals, store=store, embeddings=embeddings, collection=collection,
                                threshold=s.cache_threshold, requests=requests)
        return Answerer(
            retriever=self.retriever_for(store, embeddings, signals=signals, collection=collection, rerank=True),
            collection=collection,
            cheap_model=self.chat_model(s.cheap_model), strong_model=self.chat_model(s.strong_model),
            rewordings=s.rewordings, sources=s.sources_per_answer, cache=cache, subject=s.docs_subject,
        )

    @cached_property
    def budgets(self):
        """``None`` when no budget limit is set."""
        limits = self.settings.budget_limits
        if not limits.enforced:
            return None
        from askflow.adapters.firestore_budgets import FirestoreBudgets

        return FirestoreBudgets(client=self.firestore_client, collection=self.settings.budgets_collection,
                                limits=limits)

    @cached_property
    def prices(self):
        from askflow.domain.cost import PriceTable

        return PriceTable(self.settings.model_prices)

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
        from askflow.adapters.openai_wire import retrying_call

        return retrying_call(attempts=self.settings.llm_max_attempts, backoff_max_s=self.settings.llm_backoff_max_s)

    def chat_model(self, model: str) -> ChatModel | None:
        """``None`` when no chat endpoint is configured: answers are then extractive and grading heuristic."""
        if not self.settings.llm_configured:
            return None
        from askflow.adapters.openai_wire import OpenAIChatModel

        return OpenAIChatModel(client=self.openai_client, model=model, retrying=self.retrying)

    @property
    def answerer(self):
        """The answerer of the serving pair: take it once per question, and the whole question is answered with
        one model and its own collection, whatever a promotion switches meanwhile."""
        serving = self.serving()
        key = (serving.model, serving.collection)
        with self._lock:
            if key not in self._answerers:
                store, embeddings = self._pair(serving)
                self._answerers[key] = self.answerer_for(store, embeddings, collection=serving.collection,
                                                         signals=self.signals, requests=lambda: self.requests)
            return self._answerers[key]

    @cached_property
    def finetune_runs(self) -> FinetuneRuns:
        from askflow.adapters.firestore_requests import FirestoreRuns

        return FirestoreRuns(client=self.firestore_client, collection=self.settings.finetune_runs_collection)

    # -- question insights -------------------------------------------------------------------------------------
    @cached_property
    def insights_reports(self):
        from askflow.adapters.firestore_requests import FirestoreInsightsReports

        return FirestoreInsightsReports(client=self.firestore_client, collection=self.settings.insights_collection)

    @cached_property
    def report_files(self):
        """``ASKFLOW_INSIGHTS_BUCKET`` when set, else the folder ``insights`` under the data folder."""
        if self.settings.insights_bucket:
            from askflow.adapters.report_files import GcsReportFiles

            return GcsReportFiles(client=self.storage_client, bucket=self.settings.insights_bucket)
        from askflow.adapters.report_files import FolderReportFiles

        return FolderReportFiles(self.settings.data_dir / "insights")

    def gap_issues(self):
        """Where coverage gaps are filed: ``ASKFLOW_INSIGHTS_DOCS_REPO`` on GitHub (a ``ConfigurationError`` when
        it is not set)."""
        if not self.settings.insights_docs_repo:
            raise ConfigurationError("filing coverage gaps needs ASKFLOW_INSIGHTS_DOCS_REPO (owner/name)")
        from askflow.adapters.github_gaps import GitHubGapIssues

        return GitHubGapIssues(client=self.github_client, repo=self.settings.insights_docs_repo,
                               label=self.settings.github_gap_label)

    def trainer(self, *, progress: bool = False) -> EmbeddingTrainer:
        """Trains from the serving model: a fresh copy of it, loaded apart from the one answering questions."""
        from askflow.adapters.sentence_transformers_training import SentenceTransformersTrainer

        if self.settings.embedding_provider != "local":
            raise ConfigurationError("fine-tuning trains a local model: set ASKFLOW_EMBEDDING_PROVIDER=local "
                                     "(the trained model can then be served by any OpenAI-compatible endpoint)")
        serving = self.serving().model
        return SentenceTransformersTrainer(base=lambda: self.embeddings_for(serving).sentence_transformer(),
                                           base_name=serving, progress=progress)

    @cached_property
    def grader(self):
        from askflow.grading.graders import HeuristicGrader, LLMGrader

        model = self.chat_model(self.settings.cheap_model)
        return LLMGrader(model=model, subject=self.settings.docs_subject) if model is not None else HeuristicGrader()

    # -- Slack -------------------------------------------------------------------------------------------------
    @cached_property
    def slack_client(self):
        """slack_sdk's WebClient with its retry handlers (``Retry-After`` honoured on 429, 5xx and dropped
        connections retried); ``None`` when no bot token is configured (web-only deployments)."""
        if self.settings.slack_bot_token is None:
            return None
        from slack_sdk import WebClient
        from slack_sdk.http_retry.builtin_handlers import (
            ConnectionErrorRetryHandler,
            RateLimitErrorRetryHandler,
            ServerErrorRetryHandler,
        )

        return WebClient(
            token=self.settings.slack_bot_token.get_secret_value(),
            base_url=self.settings.slack_api_url,
            retry_handlers=[handler(max_retry_count=5) for handler in (
                ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, ServerErrorRetryHandler)],
        )

    @cached_property
    def slack_replies(self):
        """``None`` when no Slack bot token is configured."""
        if self.slack_client is None:
            return None
        from askflow.adapters.slack_replies import SlackReplies

        return SlackReplies(client=self.slack_client, answer_page=self.settings.answer_page,
                            reviewers=bool(self.settings.slack_reviewers))

    @cached_property
    def escalations(self):
        """Where questions askflow is not sure of go: ``ASKFLOW_ESCALATION_GITHUB_REPO``'s issues, or
        ``ASKFLOW_ESCALATION_CHANNEL`` in Slack (``None``: neither, or a channel and no bot token)."""
        s = self.settings
        if s.escalation_github_repo:
            from functools import partial

            from askflow.adapters.github_escalations import GitHubEscalations
            from askflow.adapters.slack_escalations import deliver_in_slack
            from askflow.ingest.sources.github_issues import repository_audiences

            client, repo = self.github_client, s.escalation_github_repo
            return GitHubEscalations(
                client=client, repo=repo, label=s.escalation_github_label, command=s.escalation_github_command,
                reviewers=s.escalation_github_reviewers, answer_page=s.answer_page,
                readers=lambda: repository_audiences(client, repo, s.github_repo_audiences),
                deliver=partial(deliver_in_slack, self.slack_client) if self.slack_client is not None else None)
        if self.slack_client is None or not self.settings.escalation_channel:
            return None
        from askflow.adapters.slack_escalations import SlackEscalations

        return SlackEscalations(client=self.slack_client, channel=self.settings.escalation_channel,
                                audiences=self.slack_audiences, answer_page=self.settings.answer_page)

    @cached_property
    def slack_audiences(self):
        """Who may read what in the workspace (``None`` without a bot token)."""
        if self.slack_client is None:
            return None
        from askflow.adapters.slack_audiences import SlackAudiences

        return SlackAudiences(client=self.slack_client, workspace_audience=self.settings.slack_workspace_audience)


def bootstrap(settings: Settings | None = None) -> Components:
    """The components for ``settings`` (default: from the environment; a bad setting is a ``ConfigurationError``
    that names it)."""
    return Components(settings)
