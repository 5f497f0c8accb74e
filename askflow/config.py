"""Settings: every name of a collection, topic, subscription and model comes from here.

Read from environment variables (prefix ``ASKFLOW_``) and an optional ``.env`` file. The OpenAI key and base URL
also accept the conventional ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, get_args

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from askflow.domain.audiences import PUBLIC, audience_names
from askflow.domain.cost import RerankPrice
from askflow.domain.errors import ConfigurationError

# The one list of each choice: the settings validate against them, the CLI and the DAG params offer them.
Splitter = Literal["section", "recursive"]
SPLITTERS: tuple[str, ...] = get_args(Splitter)
VectorStoreName = Literal["pgvector", "weaviate"]
VECTOR_STORES: tuple[str, ...] = get_args(VectorStoreName)
EmbeddingProvider = Literal["local", "openai"]
EMBEDDING_PROVIDERS: tuple[str, ...] = get_args(EmbeddingProvider)
RerankerName = Literal["none", "cohere", "vertex"]
RERANKERS: tuple[str, ...] = get_args(RerankerName)
RERANK_DEFAULT_MODELS = {"cohere": "rerank-v3.5", "vertex": "semantic-ranker-default-004"}
GROUP_RULE = "group:"  # an IAP audience rule naming a Google group: group:NAME@DOMAIN
ContextualApi = Literal["batch", "sync"]
CONTEXTUAL_APIS: tuple[str, ...] = get_args(ContextualApi)


class ApiKey(BaseModel):
    """An API key bound to the audiences it may read (and whether it opens the admin pages)."""

    name: str
    key: SecretStr
    audiences: list[str] = []
    admin: bool = False

    @field_validator("audiences")
    @classmethod
    def _named(cls, audiences: list[str]) -> list[str]:
        return audience_names(audiences)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASKFLOW_", env_file=".env", extra="ignore")

    # Google Cloud
    project_id: str = "askflow-local"
    requests_collection: str = "requests"
    request_progress_collection: str = Field(default="progress", description=(
        "subcollection of each request holding the answer so far (outside the grading trigger's path pattern)"))
    questions_topic: str = "askflow-questions"
    questions_subscription: str = "askflow-questions-answer-worker"
    evaluation_topic: str = "askflow-evaluation"
    evaluation_subscription: str = "askflow-evaluation-airflow"
    documents_bucket: str = "askflow-documents"
    evaluation_runs_collection: str = "evaluation_runs"
    finetune_runs_collection: str = "finetune_runs"
    serving_collection: str = Field(default="serving", description=(
        "Firestore collection of the serving model + collection pair, when the vector store is Weaviate (with pgvector"
        " it is a table in the same database)"))

    # Vector store
    vector_store: VectorStoreName = "pgvector"
    collection: str = "askflow_docs"
    demo_collection: str = "askflow_demo"  # `askflow demo`'s own collection (and its learned signals, "_learned")
    database_url: str | None = Field(
        default=None, description="Postgres URL; unset means the embedded server under data_dir."
    )
    data_dir: Path = Path.home() / ".askflow"
    weaviate_url: str | None = None
    weaviate_api_key: SecretStr | None = None

    # Models
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ASKFLOW_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ASKFLOW_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    cheap_model: str = "gpt-4o-mini"
    strong_model: str = "gpt-4o"
    embedding_provider: EmbeddingProvider = "local"
    embedding_model: str = "all-mpnet-base-v2"
    model_prices: dict[str, list[float] | RerankPrice] = Field(
        default={"gpt-4o-mini": [0.15, 0.60], "gpt-4o": [2.50, 10.00], "text-embedding-3-small": [0.02],
                 "text-embedding-3-large": [0.13], "all-mpnet-base-v2": [0.0], "all-MiniLM-L6-v2": [0.0],
                 "rerank-v3.5": RerankPrice(per_1k_searches=2.00, documents_per_search=100),
                 "semantic-ranker-default-004": RerankPrice(per_1k_searches=1.00, documents_per_search=100)},
        description=("US dollars per million tokens, input then output, per model (JSON); a reranker's as "
                     "{\"per_1k_searches\", \"per_1k_documents\", \"documents_per_search\"} (or per million tokens); "
                     "a model missing here costs nothing and is named in the log"))
    llm_timeout_s: float = Field(default=60.0, gt=0, description="how long one model call may take")
    llm_max_attempts: int = Field(default=4, ge=1, description="attempts at one model call (1: no retry)")
    llm_backoff_max_s: float = Field(default=8.0, ge=0, description="the longest wait between two attempts")

    # Ask path
    api_key: SecretStr | None = Field(
        default=None, description=(
            "The deployment's admin key: when set, API calls must send a key as X-API-Key (the web page stays public"
            " and its session cookie opens the asking API as an anonymous asker); this one sees every audience and"
            " opens the admin pages."))
    api_keys: list[ApiKey] = Field(default=[], description=(
        "more API keys, each bound to audiences (JSON: [{\"name\", \"key\", \"audiences\", \"admin\"}])"))
    iap_audience: str | None = Field(default=None, description=(
        "behind Identity-Aware Proxy: the signed header's expected audience (/projects/NUMBER/...); unset: IAP"
        " headers are ignored"))
    iap_certs_url: str = "https://www.gstatic.com/iap/verify/public_key"
    iap_audience_rules: dict[str, list[str]] = Field(default={}, description=(
        "IAP identity -> audiences, by e-mail address, '@domain' (the token's hd claim: an account of that Workspace"
        " domain) or 'group:NAME@DOMAIN' (a member of that Google group, nested groups included, as the Cloud"
        " Identity Groups API says, cached at most five minutes; a failed lookup admits no one)"))
    cloud_identity_url: str = Field(default="https://cloudidentity.googleapis.com", description=(
        "the Cloud Identity API's base URL, asked whether an IAP identity is in a 'group:' rule's group"))
    cloud_identity_timeout_s: float = Field(default=5.0, gt=0, description=(
        "how long the Cloud Identity API may take to connect, and to send each part of an answer; past it the "
        "group rule admits no one this time"))
    iap_admins: list[str] = Field(default=[], description="IAP e-mail addresses that are admins")
    admin_secret: SecretStr | None = Field(default=None, description=(
        "signs the admin sign-in cookie and the review forms' tokens, with the admin keys: what an IAP-only "
        "deployment (no admin key) signs its reviewers' forms with"))
    slack_workspace_audience: str = Field(default="slack:workspace", description=(
        "the audience of a workspace's members: what its public channels are readable by"))
    github_repo_audiences: dict[str, list[str]] = Field(default={}, description=(
        "owner/name -> audiences of its issues; unset: public for a public repository, github:<owner/name> (admins"
        " only until a key or rule names it) for a private one"))
    max_question_chars: int = Field(default=4000, ge=1, description="the longest question accepted")
    rewordings: int = Field(default=3, ge=0, description="rewordings of each question by the cheap model (0: none)")
    sources_per_answer: int = Field(default=6, ge=1, description="numbered sources given to the answer model")
    request_lease_s: float = Field(default=60.0, gt=0, description=(
        "a worker's claim on a request holds this long after its last sign of life; it beats every third of it"))
    request_deadline_s: float = Field(default=900.0, gt=0, description=(
        "a request still unanswered this long after it was asked is failed (\"timed out\")"))
    partial_write_interval_s: float = Field(default=1.0, ge=0, description=(
        "while the model writes an answer, its partial answer is written at most this often (Firestore's guidance:"
        " about one sustained write a second per document)"))
    slack_edit_interval_s: float = Field(default=1.0, ge=0, description=(
        "while the model writes an answer, the Slack reply is edited at most this often (Slack allows about one"
        " chat.update a second)"))
    requeue_after_s: float = Field(default=120.0, ge=0, description=(
        "an unfinished request untouched this long is queued again by the requeue sweep (a lost or dead-lettered"
        " message); past request_deadline_s it is failed instead"))
    requeue_batch: int = Field(default=500, ge=1, description="the most requests one sweep queues again")

    # How sure askflow is (README "When askflow is not sure"): "not sure" needs no threshold, no retrieval signal
    # having told hits from misses well enough (bench/confidence_calibration.py)
    confidence_weak_match: float = Field(default=1.37, ge=0, description=(
        "an answer whose confidence (its top document's fused score: 1 + 0.3 x the rest of that document's "
        "normalised passage scores) is below this rests on weakly matching sources, as the insights count it; "
        "chosen on the tuning half of the dev questions, it does not make askflow 'not sure'"))

    # Question insights (askflow insights, the askflow_question_insights DAG, GET /insights)
    insights_collection: str = "insights_reports"  # Firestore: one report per period
    insights_bucket: str | None = Field(default=None, description=(
        "GCS bucket for the reports' HTML and CSV (unset: the folder insights/ under data_dir)"))
    insights_period: str = "7d"
    insights_min_cluster_size: int = Field(default=5, ge=2)
    insights_cluster_selection: Literal["leaf", "eom"] = Field(default="leaf", description=(
        "HDBSCAN's cluster selection: leaf (one cluster per topic) or eom (the most persistent, broader ones)"))
    insights_low_confidence: float = Field(default=0.35, ge=0, le=1, description=(
        "for a request stored before answers carried a confidence: an answer whose top source is less similar "
        "(cosine) than this to its question rests on weak evidence (the others: confidence_weak_match)"))
    insights_gap_share: float = Field(default=0.5, gt=0, le=1, description=(
        "a cluster is a coverage gap when at least this share of its answers did not help"))
    insights_assign_similarity: float = Field(default=0.5, ge=0, le=1, description=(
        "an earlier question counts toward a cluster's trend when at least this similar to its centre"))
    insights_docs_repo: str | None = Field(default=None, description=(
        "owner/name of the docs repository where coverage gaps are filed as issues (the DAG's file_issues)"))

    # The MCP server (coding agents)
    mcp_collection: str | None = Field(default=None, description=(
        "the collection the MCP tools search and read (unset: the serving one); `ask` answers as the worker does"))
    mcp_search_results: int = Field(default=8, ge=1, le=50)
    mcp_ask_timeout_s: float = Field(default=50.0, gt=0, description=(
        "how long the MCP `ask` tool waits for the answer before it returns the request id to follow"))
    mcp_allowed_hosts: list[str] = Field(default=["127.0.0.1:*", "localhost:*", "[::1]:*"], description=(
        "Host headers the MCP server accepts (DNS-rebinding protection); [\"*\"] turns the check off (a deployed "
        "function, behind its API key)"))

    # Tracing (OpenTelemetry): gcp = Cloud Trace, otlp = any collector (OTEL_EXPORTER_OTLP_ENDPOINT), console, none
    tracing: Literal["none", "console", "otlp", "gcp"] = "none"
    service_name: str = "askflow"

    # Budgets (enforced at the ask API, the Slack bot and the MCP server before anything is queued or searched;
    # unset: no limit)
    budgets_collection: str = "budgets"  # Firestore: one counter per identity and window
    budget_window_s: int = Field(default=86_400, ge=60, description="the budgets' window (a UTC day)")
    budget_questions_per_asker: int | None = Field(default=None, ge=0)
    budget_usd_per_asker: float | None = Field(default=None, ge=0)
    budget_questions_total: int | None = Field(default=None, ge=0)
    budget_usd_total: float | None = Field(default=None, ge=0)
    budget_lookups_per_asker: int | None = Field(default=None, ge=0, description=(
        "the MCP server's `search` and `fetch` calls per window (the MCP server counts as one asker)"))
    budget_escalations_per_asker: int | None = Field(default=None, ge=0, description=(
        "questions one asker may hand to the team per window (README: \"When askflow is not sure\")"))
    budget_escalations_total: int | None = Field(default=None, ge=0, description=(
        "questions everyone together may hand to the team per window"))

    # Evaluation loop
    evaluation_batch_size: int = Field(default=20, ge=1, description="answers graded per model call")
    evaluation_max_messages: int = Field(default=200, ge=1, description="grading events drained per DAG run")
    grading_attempts: int = Field(default=3, ge=1, le=20, description=(
        "runs that may try to grade an answer the model judge skipped or mangled before it is left ungraded"))
    answers_source: str = "answers"
    answers_base_url: str = Field(default="", description=(
        "where stored answers' pages are (empty: ASKFLOW_PUBLIC_URL's /answers)"))

    # Trust (README: "What askflow learns, and from whom")
    docs_subject: str = Field(default="", max_length=200, description=(
        "what the indexed docs are about (\"Apache Airflow\"), named in the rewording, answering and grading "
        "prompts"))
    public_url: str = Field(default="", description=(
        "the API's public base URL (https://askflow.example.com): the absolute links to stored answers' pages that "
        "Slack, MCP and the web page give (empty: relative links)"))
    review_queue_per_asker: int = Field(default=5, ge=0, le=1000, description=(
        "open review-queue items one asker's 👍 may add (0: an asker's 👍 queues nothing)"))
    slack_reviewers: list[str] = Field(default=[], description=(
        "Slack user ids whose approve click or ✅ verifies an answer (a user group's id, S..., counts its members)"))
    audit_collection: str = "audit"  # Firestore: every reviewer's decision, who, when, what
    request_retention_days: int = Field(default=365, ge=1, le=36_500, description=(
        "how long a request is kept: its expires_at, which Firestore's TTL policy deletes it by"))

    # Escalation (README: "When askflow is not sure"): questions askflow is not sure of go to the team's channel
    escalation_channel: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description=(
        "the Slack channel id where questions askflow is not sure of are handed to the team (unset: none are)"))
    escalation_reaction: str = Field(default="white_check_mark", pattern=r"^[a-z0-9_+-]{1,100}$", description=(
        "the reaction by which a reviewer marks a reply in an escalation's thread as the answer"))
    escalation_github_repo: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$",
                                               description=(
        "owner/name of the GitHub repository where questions go to the team as issues instead of a Slack channel "
        "(one of the two; its readers: ASKFLOW_GITHUB_REPO_AUDIENCES, or public for a public repository)"))
    escalation_github_label: str = Field(default="askflow-question", min_length=1, max_length=50, description=(
        "the label of the escalation issues askflow opens"))
    escalation_github_command: str = Field(default="/answer", pattern=r"^\S{1,50}$", description=(
        "a reviewer's comment starting with this word marks the answer: the rest of that comment (a bare command "
        "marks nothing)"))
    escalation_github_reviewers: list[str] = Field(default=[], description=(
        "GitHub logins whose command comment marks an escalation issue's answer (empty: no one's)"))
    escalation_internal_reaction: str = Field(default="lock", pattern=r"^[a-z0-9_+-]{1,100}$", description=(
        "the reaction by which a reviewer marks the team's answer internal (before or after it is marked the answer)"))
    escalation_internal_audience: str = Field(
        default="slack:workspace", description=(
            "the audience a team's answer marked internal is narrowed to (never public): the cache serves it to no "
            "one outside it, the feed never lists it (default: the Slack workspace's members, as "
            "slack_workspace_audience's default names them; `employees` where API keys or IAP rules give staff that "
            "audience)"))

    # Learning from users (README: "The learning loop")
    learning: bool = Field(default=True, description=(
        "use what graded answers taught (document priors, associations, the verified-answer cache); off: the "
        "ranking and answers are the fused retrieval's alone (grading still records what it learns)"))
    learned_collection: str = "askflow_learned"  # one record per graded request (Postgres table)
    # Off by default: measured on questions kept aside, the learned ranking left the rewordings' hit@5 where it was and
    # cost new questions their top-5 place (README: "The learning loop")
    prior_weight: float = Field(default=0.0, ge=0, le=0.5, description=(
        "the most a document prior moves a fused score, as a fraction (0: off)"))
    prior_strength: float = Field(default=2.0, gt=0, description="pseudo-votes on each side of a document prior")
    association_weight: float = Field(default=0.0, ge=0, description=(
        "how much a verified answer to a similar earlier question moves the documents it cited (0: off)"))
    association_min_similarity: float = Field(default=0.7, ge=0, lt=1, description=(
        "cosine similarity an earlier question needs to the asked one for its answer's votes to count"))
    cache: bool = True  # serve verified earlier answers
    cache_threshold: float = Field(default=0.68, gt=0, le=1, description=(
        "cosine similarity a question needs to an earlier verified one to be answered from it"))

    # Ingestion and retrieval
    splitter: Splitter = "section"
    chunk_size: int = Field(default=1000, ge=1, description="the longest chunk, in characters")
    chunk_overlap: int = Field(default=150, ge=0, description=(
        "characters a recursive chunk repeats of the one before (less than chunk_size)"))
    hybrid_alpha: float = Field(default=0.5, ge=0, le=1, description=(
        "hybrid search's weight of the vector side: 1 = vector only, 0 = keywords only"))
    retrieval_candidates: int = Field(default=80, ge=1, description="chunks fetched per search before fusion")

    # Reranking (README "Retrieval quality"): a model reorders the fused top documents, before the learned ranking
    reranker: RerankerName = Field(default="none", description=(
        "none, cohere (the Cohere-compatible /rerank wire format: Cohere, Voyage, Jina, vLLM, Infinity) or vertex "
        "(the Vertex AI ranking API)"))
    rerank_model: str | None = Field(default=None, description=(
        "the reranking model; unset: rerank-v3.5 with cohere, semantic-ranker-default-004 with vertex"))
    rerank_url: str = Field(default="https://api.cohere.com/v1/rerank", description=(
        "the Cohere-compatible endpoint (https://api.voyageai.com/v1/rerank, https://api.jina.ai/v1/rerank, "
        "http://vllm:8000/v1/rerank, http://infinity:7997/rerank)"))
    rerank_api_key: SecretStr | None = Field(default=None, description=(
        "the Cohere-compatible endpoint's key, sent as a bearer token (unset: none sent, a self-hosted server)"))
    vertex_ranking_url: str = Field(default="https://discoveryengine.googleapis.com/v1", description=(
        "the Discovery Engine API's base URL (its ranking config is ASKFLOW_VERTEX_RANKING_CONFIG of "
        "ASKFLOW_PROJECT_ID, location global)"))
    vertex_ranking_config: str = "default_ranking_config"
    rerank_top_n: int = Field(default=30, ge=1, le=100, description=(
        "the fused top documents the reranker reorders (the rest keep their places below them); up to 100, one "
        "search as Cohere and Vertex AI bill"))
    rerank_max_chars: int = Field(default=2000, ge=100, description=(
        "the most text of one document sent to the reranker, title included: its best passages, best first, the "
        "last cut (under the model's input limit at about four characters a token: semantic-ranker-default-004 reads "
        "1,024 tokens, rerank-v3.5 4,096 with the question)"))
    rerank_timeout_s: float = Field(default=1.0, gt=0, description=(
        "how long the reranking of one question may take, retries included; past it the fused order stands"))
    rerank_max_attempts: int = Field(default=2, ge=1, description=(
        "attempts at one reranking (a 429, a 5xx, a time-out or a dropped connection is tried again within "
        "rerank_timeout_s)"))
    withheld_audiences: list[str] = Field(default=[], description=(
        "audiences (fnmatch patterns: [\"employees\", \"slack:*\"]) whose documents' text is never sent to a "
        "third-party reranker or context model: such a document (or an unlabelled one, while this is set) keeps its "
        "fused place, and its chunks get no model-written context"))

    # Contextual chunks (README "Retrieval quality"): at ingestion the cheap model places each chunk in its document
    contextual_chunks: bool = Field(default=False, description=(
        "the docs ingestion DAG's contextual step: the cheap model writes one or two sentences placing each chunk in "
        "its document, embedded and keyword-indexed with it"))
    contextual_api: ContextualApi = Field(default="batch", description=(
        "batch: one OpenAI Batch API job per DAG task (half price, done within 24 h; an endpoint without a Batch API, "
        "or a job that failed, is called chunk by chunk); sync: one chat completion per chunk"))
    contextual_max_usd_per_run: float = Field(default=5.0, ge=0, description=(
        "the most one run's contexts may cost at model_prices: no call is made that would pass it, and the chunks "
        "left wait for the next run"))
    contextual_document_chars: int = Field(default=24_000, ge=1000, description=(
        "the most of its document one call reads: a longer document is cut to a window around the chunk"))
    contextual_batch_poll_s: float = Field(default=60.0, gt=0, description=(
        "how often a Batch API job is asked whether it is done"))
    pgvector_ef_search: int = Field(default=200, ge=1, le=1000, description=(
        "HNSW search breadth, within pgvector's range: recall@10 ≥ 0.95 up to 100k chunks; 0.915-0.975 at 1M, "
        "400 gave 0.965"))
    pgvector_keyword_rows: int = Field(default=10_000, ge=1, description=(
        "rows a keyword search may rank (see PgVectorStore.keyword_search)"))
    serving_refresh_s: float = Field(default=10.0, ge=0, description=(
        "how long a process keeps the serving pair before it reads it again (0: at every question)"))

    # Fine-tuning the embedding model (askflow finetune, the askflow_finetune_embeddings DAG)
    finetune_steps: int = Field(default=100, ge=1, description="fine-tuning's training steps")
    finetune_batch_size: int = Field(default=32, ge=1, description="training pairs per step")
    finetune_learning_rate: float = Field(default=3e-5, gt=0)
    finetune_metric: str = "mrr@10"
    finetune_margin: float = Field(default=0.01, ge=0, description=(
        "a challenger is promoted only if it beats the serving model on finetune_metric by at least this much"))
    finetune_synthetic_passages: int = Field(default=0, ge=0, description=(
        "passages the cheap model writes a training question for (0: none); each is asked once, ever"))
    finetune_questions: Path | None = Field(default=None, description=(
        "question set (askflow eval retrieval's JSONL) that judges champion and challenger"))
    training_queue: str = Field(default="default", description=(
        "Airflow queue of the training task: a worker pool with more CPU or memory (see README)"))

    # Documentation websites (a sitemap URL, or a start URL to crawl under its path)
    web_user_agent: str = "askflow-docs/0.1 (+https://github.com/askflow/askflow)"
    web_rate_limit_s: float = Field(default=0.5, ge=0, description="at least this long between two requests")
    web_timeout_s: float = Field(default=20.0, gt=0)
    web_max_page_bytes: int = Field(default=2_000_000, ge=1024, description="a page is read up to this size")
    web_max_pages: int = Field(default=5000, ge=1, description="the most pages a crawl without a sitemap lists")
    web_main_selector: str = Field(default="main, article, [role=main]", description=(
        "CSS selector of a page's main content (the site's navigation and chrome are left out)"))
    web_max_sitemap_bytes: int = Field(default=50 * 2**20, ge=1024, description=(
        "the largest sitemap read, also once decompressed (the sitemap protocol's limit: 50 MiB)"))
    web_allowed_hosts: list[str] = Field(default=[], description=(
        "host:port pairs besides the location's own that a site's redirects, child sitemaps, pages and canonical "
        "links may lead to (JSON list: [\"www.example.com:443\"])"))
    web_allowed_networks: list[str] = Field(default=[], description=(
        "networks (CIDR) of addresses that are not public a site may still be reached at: an intranet site "
        "([\"10.0.0.0/8\"]); unset, loopback, private and link-local addresses (the metadata server) are refused"))
    web_ignored_query_params: list[str] = Field(
        default=["utm_*", "gclid", "fbclid", "msclkid", "mc_cid", "mc_eid", "_ga"], description=(
            "query parameters (fnmatch patterns) a page's URL and id are read without; every other one makes "
            "another page"))
    web_max_unavailable_share: float = Field(default=0.1, ge=0, le=1, description=(
        "a run in which more than this share of a site's pages could not be read (403, 5xx, a dropped connection) "
        "fails; those pages keep what is stored of them either way"))

    # Slack and GitHub
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_channels: list[str] = []
    slack_reply_window_days: float = Field(default=7.0, ge=0, description=(
        "each Slack ingestion run lists the threads started up to this long before the newest stored one again, so"
        " that their new replies are read; replies to older threads wait for the reconcile"))
    slack_reconcile_every_runs: int = Field(default=24, ge=0, description=(
        "one Slack ingestion run in this many (numbered by the hour since the epoch: 24 is the 00:00 UTC run) lists"
        " each channel's whole history, pruning deleted threads; 0: never, 1: every run"))
    slack_reread_every_runs: int = Field(default=24, ge=0, description=(
        "each Slack ingestion run reads again the replies of one in this many of the threads it lists, so that an"
        " edited reply (which moves nothing Slack's history shows) is read within this many runs; 0: never"))
    slack_app_id: str | None = Field(default=None, description=(
        "askflow's Slack app id (A...): what it posts from any installation (the other side of a Slack Connect"
        " channel) is never indexed; unset: asked of Slack (bots.info) when a message of another bot needs it"))
    github_api_url: str = "https://api.github.com"
    github_token: SecretStr | None = None
    github_repos: list[str] = []
    github_reconcile_every_runs: int = Field(default=7, ge=0, description=(
        "one GitHub ingestion run in this many (numbered by the day since the epoch) lists every issue, pruning"
        " deleted and transferred ones; 0: never, 1: every run"))
    github_closed_max_age_days: int | None = Field(default=None, ge=0, description=(
        "issues closed longer ago than this are not indexed, and stored ones are pruned; unset: every issue"))
    github_gap_label: str = Field(default="askflow-gap", min_length=1, description=(
        "the label of the coverage-gap issues askflow files: the GitHub ingestion never indexes them"))

    @property
    def answer_pages(self) -> str:
        """Where stored answers' pages are: ``answers_base_url``, or ``public_url``'s ``/answers``."""
        return (self.answers_base_url or f"{self.public_url.rstrip('/')}/answers").rstrip("/")

    def answer_page(self, request_id: str) -> str:
        """The page of a stored answer (``/answers/{id}``), absolute when ``public_url`` is set."""
        return f"{self.answer_pages}/{request_id}"

    @property
    def budget_limits(self):
        from askflow.domain.budgets import BudgetLimits

        return BudgetLimits(window_s=self.budget_window_s, questions_per_asker=self.budget_questions_per_asker,
                            usd_per_asker=self.budget_usd_per_asker, questions_total=self.budget_questions_total,
                            usd_total=self.budget_usd_total, lookups_per_asker=self.budget_lookups_per_asker,
                            escalations_per_asker=self.budget_escalations_per_asker,
                            escalations_total=self.budget_escalations_total)

    @model_validator(mode="after")
    def _one_escalation_place(self) -> Settings:
        if self.escalation_channel and self.escalation_github_repo:
            raise ValueError("questions go to the team in one place: set ASKFLOW_ESCALATION_CHANNEL or "
                             "ASKFLOW_ESCALATION_GITHUB_REPO, not both")
        return self

    @field_validator("iap_audience_rules")
    @classmethod
    def _rules(cls, rules: dict[str, list[str]]) -> dict[str, list[str]]:
        for rule in rules:
            if rule.lower().startswith(GROUP_RULE) and not re.fullmatch(r"[^@\s]+@[^@\s]+", rule[len(GROUP_RULE):]):
                raise ValueError(f"a group rule names the group's address, group:NAME@DOMAIN (got {rule!r})")
        return rules

    @field_validator("escalation_internal_audience")
    @classmethod
    def _internal_audience(cls, name: str) -> str:
        if name == PUBLIC:
            raise ValueError("an internal answer's audience cannot be public")
        return audience_names([name])[0]

    @field_validator("withheld_audiences")
    @classmethod
    def _patterns(cls, patterns: list[str]) -> list[str]:
        if any(not pattern.strip() for pattern in patterns):
            raise ValueError("an audience pattern is empty")
        return [pattern.strip() for pattern in patterns]

    @property
    def reranker_model(self) -> str:
        """``rerank_model``, or the chosen reranker's default model."""
        return self.rerank_model or RERANK_DEFAULT_MODELS.get(self.reranker, "")

    @property
    def iap_group_rules(self) -> dict[str, list[str]]:
        """The ``group:`` rules of ``iap_audience_rules``: the group's address (lower case) -> audiences."""
        return {rule[len(GROUP_RULE):].lower(): audiences
                for rule, audiences in self.iap_audience_rules.items() if rule.lower().startswith(GROUP_RULE)}

    @property
    def llm_configured(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None


def load_settings(**overrides) -> Settings:
    """Settings from the environment (and ``overrides``). A bad value is a ``ConfigurationError`` naming the
    variable and what it accepts, never a traceback."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        secret = {name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
        problems = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            got = "" if field in secret else f" (got {item['input']!r})"
            problems.append(f"ASKFLOW_{field.upper()}: {item['msg']}{got}")
        raise ConfigurationError("bad setting: " + "; ".join(problems)) from None
    except SettingsError as error:  # a list or other JSON-valued setting that is not JSON
        field = re.search(r'field "(\w+)"', str(error))
        name = f"ASKFLOW_{field.group(1).upper()}" if field else "a setting"
        raise ConfigurationError(f"bad setting: {name}: not valid JSON (a list is written [\"a\", \"b\"])") from None
