# HTTPS: the MCP server for coding agents (streamable HTTP, stateless): search, fetch, ask. An async function:
# functions-framework serves it with uvicorn. Coding agents call it from anywhere without Google credentials;
# authenticated like the API (api_authenticated: the X-API-Key header). `ask` stores a request and queues it, as the
# API does.
module "mcp" {
  # checkov:skip=CKV_GCP_124:coding agents call it from anywhere; set api_authenticated for an API key
  # checkov:skip=CKV_GCP_102:coding agents call without Google credentials; api_authenticated adds the API key
  source               = "./modules/function"
  project_id           = var.project_id
  region               = var.region
  source_bucket        = google_storage_bucket.function_source.name
  source_object        = var.function_source_object
  name                 = "${var.name_prefix}-mcp"
  entry_point          = "mcp"
  account_id           = "${var.name_prefix}-mcp"
  account_display_name = "askflow MCP server"
  max_instance_count   = 10
  available_memory     = "1Gi"
  timeout_seconds      = 120 # `ask` waits up to ASKFLOW_MCP_ASK_TIMEOUT_S for the worker's answer
  ingress_settings     = "ALLOW_ALL"
  public               = true
  # the Host check guards servers on a developer's machine; a deployed one answers at its run.app name
  environment_variables = merge(local.askflow_env, {
    ASKFLOW_MCP_ALLOWED_HOSTS = jsonencode(["*"])
  })
  secrets       = google_secret_manager_secret.secrets
  secret_env    = local.mcp_secret_env
  project_roles = ["roles/datastore.user", "roles/cloudtrace.agent"]
  publishes_to  = { questions = google_pubsub_topic.questions.name }
  depends_on    = [google_project_service.apis]
}

output "mcp_url" {
  value = "${module.mcp.uri}/mcp"
}
