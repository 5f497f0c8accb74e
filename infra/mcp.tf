# HTTPS: the MCP server for coding agents (streamable HTTP, stateless): search, fetch, ask. An async function:
# functions-framework serves it with uvicorn. Authenticated like the API (api_authenticated: the X-API-Key header).
resource "google_cloudfunctions2_function" "mcp" {
  # checkov:skip=CKV_GCP_124:coding agents call it from anywhere; set api_authenticated for an API key
  name     = "${var.name_prefix}-mcp"
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = "mcp"
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = var.function_source_object
      }
    }
  }
  service_config {
    max_instance_count    = 10
    available_memory      = "1Gi"
    timeout_seconds       = 120 # `ask` waits up to ASKFLOW_MCP_ASK_TIMEOUT_S for the worker's answer
    service_account_email = google_service_account.mcp.email
    ingress_settings      = "ALLOW_ALL"
    # the Host check guards servers on a developer's machine; a deployed one answers at its run.app name
    environment_variables = merge(local.askflow_env, {
      ASKFLOW_MCP_ALLOWED_HOSTS = jsonencode(["*"])
    })
    dynamic "secret_environment_variables" {
      for_each = local.mcp_secret_env
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.secrets[secret_environment_variables.key].secret_id
        version    = "latest"
      }
    }
  }
  depends_on = [google_project_service.apis]
}

output "mcp_url" {
  value = "${google_cloudfunctions2_function.mcp.service_config[0].uri}/mcp"
}

resource "google_service_account" "mcp" {
  account_id   = "${var.name_prefix}-mcp"
  display_name = "askflow MCP server"
}

# `ask` stores a request and queues it, as the API does
resource "google_project_iam_member" "mcp_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.mcp.email}"
}

resource "google_pubsub_topic_iam_member" "mcp_publishes_questions" {
  topic  = google_pubsub_topic.questions.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.mcp.email}"
}

resource "google_secret_manager_secret_iam_member" "mcp_reads_secrets" {
  for_each  = local.mcp_secret_env
  secret_id = google_secret_manager_secret.secrets[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.mcp.email}"
}

resource "google_cloud_run_service_iam_member" "public_mcp" {
  # checkov:skip=CKV_GCP_102:coding agents call without Google credentials; api_authenticated adds the API key
  location = google_cloudfunctions2_function.mcp.location
  service  = google_cloudfunctions2_function.mcp.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
