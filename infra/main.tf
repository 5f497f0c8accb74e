terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

locals {
  apis = [
    "cloudfunctions.googleapis.com", "run.googleapis.com", "cloudbuild.googleapis.com", "eventarc.googleapis.com",
    "pubsub.googleapis.com", "firestore.googleapis.com", "secretmanager.googleapis.com", "composer.googleapis.com",
    "artifactregistry.googleapis.com", "storage.googleapis.com", "cloudscheduler.googleapis.com",
    "cloudtrace.googleapis.com", "datalineage.googleapis.com", "compute.googleapis.com", "iap.googleapis.com",
    "cloudidentity.googleapis.com", # the group: rules of iap_audience_rules ask it who is in a group
  ]
  # The settings every function and the DAGs read (askflow.config.Settings), from the same variables.
  askflow_env = {
    ASKFLOW_PROJECT_ID                 = var.project_id
    ASKFLOW_REQUESTS_COLLECTION        = var.requests_collection
    ASKFLOW_QUESTIONS_TOPIC            = var.questions_topic
    ASKFLOW_QUESTIONS_SUBSCRIPTION     = var.questions_subscription
    ASKFLOW_EVALUATION_TOPIC           = var.evaluation_topic
    ASKFLOW_EVALUATION_SUBSCRIPTION    = var.evaluation_subscription
    ASKFLOW_DOCUMENTS_BUCKET           = var.documents_bucket
    ASKFLOW_EVALUATION_RUNS_COLLECTION = var.evaluation_runs_collection
    ASKFLOW_FINETUNE_RUNS_COLLECTION   = var.finetune_runs_collection
    ASKFLOW_SERVING_COLLECTION         = var.serving_collection
    ASKFLOW_COLLECTION                 = var.collection
    ASKFLOW_INSIGHTS_COLLECTION        = var.insights_collection
    ASKFLOW_BUDGETS_COLLECTION         = var.budgets_collection
    ASKFLOW_TRACING                    = var.tracing
    ASKFLOW_INSIGHTS_BUCKET            = var.insights_bucket
    ASKFLOW_VECTOR_STORE               = var.vector_store
    ASKFLOW_CHEAP_MODEL                = var.cheap_model
    ASKFLOW_STRONG_MODEL               = var.strong_model
    ASKFLOW_EMBEDDING_PROVIDER         = "openai"
    ASKFLOW_EMBEDDING_MODEL            = var.embedding_model
    ASKFLOW_PUBLIC_URL                 = var.public_url
    ASKFLOW_DOCS_SUBJECT               = var.docs_subject
    ASKFLOW_AUDIT_COLLECTION           = var.audit_collection
    ASKFLOW_REQUEST_RETENTION_DAYS     = var.request_retention_days
  }
  # Secrets the answer worker reads (the Slack token: it replies in threads).
  secret_env = {
    openai_api_key   = "ASKFLOW_OPENAI_API_KEY"
    weaviate_url     = "ASKFLOW_WEAVIATE_URL"
    weaviate_api_key = "ASKFLOW_WEAVIATE_API_KEY"
    slack_bot_token  = "ASKFLOW_SLACK_BOT_TOKEN"
    rerank_api_key   = "ASKFLOW_RERANK_API_KEY"
  }
  # Secrets the API reads: its API key, when calls must send one.
  api_secret_env = var.api_authenticated ? { api_key = "ASKFLOW_API_KEY" } : {}
  # Secrets the MCP server reads: the vector store and embedding endpoint it searches, and the API key (same mode
  # as the API).
  mcp_secret_env = merge(
    { openai_api_key = "ASKFLOW_OPENAI_API_KEY", weaviate_url = "ASKFLOW_WEAVIATE_URL",
    weaviate_api_key = "ASKFLOW_WEAVIATE_API_KEY", rerank_api_key = "ASKFLOW_RERANK_API_KEY" },
    local.api_secret_env,
  )
  # Secrets the Slack webhook reads.
  slack_secret_env = {
    slack_signing_secret = "ASKFLOW_SLACK_SIGNING_SECRET"
    slack_bot_token      = "ASKFLOW_SLACK_BOT_TOKEN"
  }
}

resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}
