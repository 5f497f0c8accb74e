variable "project_id" {
  type        = string
  description = "Google Cloud project to deploy into."
}

variable "region" {
  type        = string
  default     = "us-central1"
  description = "Region of the functions, the bucket and the Composer environment."
}

variable "name_prefix" {
  type        = string
  default     = "askflow"
  description = "Prefix of service accounts, buckets and the Composer environment."
}

variable "requests_collection" {
  type    = string
  default = "requests"
}

variable "questions_topic" {
  type    = string
  default = "askflow-questions"
}

variable "questions_subscription" {
  type    = string
  default = "askflow-questions-answer-worker"
}

variable "evaluation_topic" {
  type    = string
  default = "askflow-evaluation"
}

variable "evaluation_subscription" {
  type    = string
  default = "askflow-evaluation-airflow"
}

variable "evaluation_runs_collection" {
  type    = string
  default = "evaluation_runs"
}

variable "finetune_runs_collection" {
  type    = string
  default = "finetune_runs"
}

variable "serving_collection" {
  type        = string
  default     = "serving"
  description = "Firestore collection of the serving embedding model + collection pair (Weaviate deployments)."
}

variable "documents_bucket" {
  type    = string
  default = "askflow-documents"
}

variable "tracing" {
  type        = string
  default     = "gcp"
  description = "where spans go: gcp (Cloud Trace), otlp (OTEL_EXPORTER_OTLP_ENDPOINT), console or none"
}

variable "budgets_collection" {
  type    = string
  default = "budgets"
}

variable "insights_bucket" {
  type    = string
  default = "askflow-insights"
}

variable "insights_collection" {
  type    = string
  default = "insights_reports"
}

variable "collection" {
  type    = string
  default = "askflow_docs"
}

variable "vector_store" {
  type    = string
  default = "weaviate"
}

variable "cheap_model" {
  type    = string
  default = "gpt-4o-mini"
}

variable "strong_model" {
  type    = string
  default = "gpt-4o"
}

variable "embedding_model" {
  type    = string
  default = "text-embedding-3-small"
}

variable "function_source_object" {
  type        = string
  default     = "functions-source.zip"
  description = "Object in the source bucket holding functions/ with the packaged core (cloudbuild.yaml uploads it)."
}

variable "secrets" {
  type = map(string)
  default = {
    openai_api_key       = "askflow-openai-api-key"
    slack_signing_secret = "askflow-slack-signing-secret"
    slack_bot_token      = "askflow-slack-bot-token"
    weaviate_url         = "askflow-weaviate-url"
    weaviate_api_key     = "askflow-weaviate-api-key"
    api_key              = "askflow-api-key"
    rerank_api_key       = "askflow-rerank-api-key"
    admin_secret         = "askflow-admin-secret"
  }
  description = "Setting name -> Secret Manager secret id."
}

variable "api_authenticated" {
  type        = bool
  default     = false
  description = "Require the X-API-Key header (secret askflow-api-key) on API calls; the web page stays public."
}

variable "requeue_schedule" {
  description = "cron schedule of the requeue sweep (Cloud Scheduler)"
  type        = string
  default     = "*/5 * * * *"
}

variable "public_url" {
  description = "The API's public base URL (its function URL or a custom domain): absolute links to stored answers' pages in Slack, MCP and the web page."
  type        = string
  default     = ""
}

variable "docs_subject" {
  description = "What the indexed docs are about (\"Apache Airflow\"), named in the rewording, answering and grading prompts."
  type        = string
  default     = ""
}

variable "audit_collection" {
  description = "Firestore collection of reviewers' decisions (who approved or turned down which answer, when)."
  type        = string
  default     = "audit"
}

variable "request_retention_days" {
  description = "How many days a request (question, answer, ratings) is kept: Firestore's TTL policy deletes it once its expires_at, set by the app this many days after it was created, has passed."
  type        = number
  default     = 365
  validation {
    condition     = var.request_retention_days >= 1 && floor(var.request_retention_days) == var.request_retention_days
    error_message = "request_retention_days must be a whole number of days, at least 1."
  }
}

variable "admin_invokers" {
  description = "Who may open the admin function (the admin pages and the insights): IAM members such as user:ana@example.com, group:askflow-admins@example.com or serviceAccount:…. Without admin_iap they get roles/run.invoker on it (and send an identity token); with admin_iap, IAP's roles/iap.httpsResourceAccessor. Never allUsers or allAuthenticatedUsers."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for member in var.admin_invokers : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+", member))])
    error_message = "admin_invokers are IAM members (user:, group:, serviceAccount:, domain:, principal:, principalSet:); allUsers and allAuthenticatedUsers are refused."
  }
}

variable "admin_iap" {
  description = "Put the admin function behind Identity-Aware Proxy: an external HTTPS load balancer (a serverless NEG) at admin_domain, with IAP on its backend service; the function then takes only the load balancer's traffic."
  type        = bool
  default     = false
}

variable "admin_domain" {
  description = "With admin_iap: the admin pages' host name (a DNS A record to the admin_ip output), for the load balancer's Google-managed certificate."
  type        = string
  default     = ""
}

variable "iap_admins" {
  description = "With admin_iap: the e-mail addresses IAP signs in whom the admin pages treat as admins (ASKFLOW_IAP_ADMINS); any other of admin_invokers sees the insights' public view only."
  type        = list(string)
  default     = []
}

variable "iap_audience_rules" {
  description = "With admin_iap: IAP e-mail address (or @domain, a Workspace domain, or group:NAME@DOMAIN, a Google group's members, asked of the Cloud Identity API) -> audiences (ASKFLOW_IAP_AUDIENCE_RULES)."
  type        = map(list(string))
  default     = {}
}
