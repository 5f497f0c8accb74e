resource "google_storage_bucket" "function_source" {
  name                        = "${var.project_id}-${var.name_prefix}-function-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }
}

# Each function is a modules/function: its own service account, its project roles and topics, its secrets, its
# trigger and its invokers. Firestore has no per-collection IAM: every account that reads or writes requests has
# roles/datastore.user on the project, and every one that opens spans roles/cloudtrace.agent (Cloud Trace).

# HTTPS: POST /requests, GET /requests/{id}; the public web page and API (set api_authenticated for an API key).
module "api" {
  # checkov:skip=CKV_GCP_124:serves the public web page and API (set api_authenticated for an API key)
  # checkov:skip=CKV_GCP_102:serves the public web page and API (set api_authenticated for an API key)
  source                = "./modules/function"
  project_id            = var.project_id
  region                = var.region
  source_bucket         = google_storage_bucket.function_source.name
  source_object         = var.function_source_object
  name                  = "${var.name_prefix}-api"
  entry_point           = "api"
  account_id            = "${var.name_prefix}-api"
  account_display_name  = "askflow HTTPS API"
  max_instance_count    = 20
  available_memory      = "512Mi"
  timeout_seconds       = 30
  ingress_settings      = "ALLOW_ALL"
  public                = true
  environment_variables = local.askflow_env
  secrets               = google_secret_manager_secret.secrets
  secret_env            = local.api_secret_env
  project_roles         = ["roles/datastore.user", "roles/cloudtrace.agent"]
  publishes_to          = { questions = google_pubsub_topic.questions.name }
  depends_on            = [google_project_service.apis]
}

output "api_url" {
  value = module.api.uri
}

# HTTPS: the admin pages (/admin, the review queue, its sign-in) and the question insights, a function of their own
# so that they sit behind IAM or IAP, apart from the public page: never an allUsers binding. Without IAP, only
# admin_invokers may invoke it (roles/run.invoker: they send an identity token); with admin_iap, it takes only the
# load balancer's traffic (admin.tf), IAP admits admin_invokers, and the function reads their identity from IAP's
# signed header (ASKFLOW_IAP_AUDIENCE is the backend service's).
module "admin" {
  # checkov:skip=CKV_GCP_124:without IAP, reached from outside the VPC; IAM admits only admin_invokers
  source                = "./modules/function"
  project_id            = var.project_id
  region                = var.region
  source_bucket         = google_storage_bucket.function_source.name
  source_object         = var.function_source_object
  name                  = local.admin_function
  entry_point           = "admin"
  account_id            = "${var.name_prefix}-admin"
  account_display_name  = "askflow admin pages"
  max_instance_count    = 2
  available_memory      = "512Mi"
  timeout_seconds       = 60
  ingress_settings      = var.admin_iap ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_ALL"
  environment_variables = merge(local.askflow_env, local.admin_iap_env)
  secrets               = google_secret_manager_secret.secrets
  # behind IAP there may be no admin key: ASKFLOW_ADMIN_SECRET signs the reviewers' forms
  secret_env = merge(local.api_secret_env, var.admin_iap ? { admin_secret = "ASKFLOW_ADMIN_SECRET" } : {})
  project_roles         = ["roles/datastore.user", "roles/cloudtrace.agent"]
  invokers              = local.admin_run_invokers
  depends_on            = [google_project_service.apis]
}

output "admin_url" {
  value = module.admin.uri
}

# Pub/Sub push (questions subscription): answers one request per message.
module "answer_worker" {
  source                = "./modules/function"
  project_id            = var.project_id
  region                = var.region
  source_bucket         = google_storage_bucket.function_source.name
  source_object         = var.function_source_object
  name                  = "${var.name_prefix}-answer-worker"
  entry_point           = "answer_worker"
  account_id            = "${var.name_prefix}-worker"
  account_display_name  = "askflow answer worker"
  max_instance_count    = 20
  available_memory      = "1Gi"
  timeout_seconds       = 300
  ingress_settings      = "ALLOW_INTERNAL_ONLY"
  environment_variables = local.askflow_env
  secrets               = google_secret_manager_secret.secrets
  secret_env            = local.secret_env
  project_roles         = ["roles/datastore.user", "roles/cloudtrace.agent"]
  invokers              = { pubsub_pusher = "serviceAccount:${google_service_account.pubsub_pusher.email}" }
  depends_on            = [google_project_service.apis]
}

# Firestore (requests/{id} written, via Eventarc): queues an evaluation event when grading is due.
module "request_written" {
  source                = "./modules/function"
  project_id            = var.project_id
  region                = var.region
  source_bucket         = google_storage_bucket.function_source.name
  source_object         = var.function_source_object
  name                  = "${var.name_prefix}-request-written"
  entry_point           = "request_written"
  account_id            = "${var.name_prefix}-trigger"
  account_display_name  = "askflow Firestore trigger"
  max_instance_count    = 10
  available_memory      = "256Mi"
  timeout_seconds       = 60
  ingress_settings      = "ALLOW_INTERNAL_ONLY"
  environment_variables = local.askflow_env
  project_roles         = ["roles/cloudtrace.agent"]
  publishes_to          = { evaluation = google_pubsub_topic.evaluation.name }
  event_trigger = {
    event_type   = "google.cloud.firestore.document.v1.written"
    retry_policy = "RETRY_POLICY_RETRY"
    event_filters = [
      { attribute = "database", value = google_firestore_database.default.name },
      { attribute = "document", value = "${var.requests_collection}/{id}", operator = "match-path-pattern" },
    ]
  }
  depends_on = [google_project_service.apis]
}

# HTTPS: Slack Events API and interactivity. Slack calls without Google credentials and must reach it; every request
# is signature-checked by slack_bolt, and the signature is the authentication.
module "slack_events" {
  # checkov:skip=CKV_GCP_124:Slack must reach it; every request is signature-checked
  # checkov:skip=CKV_GCP_102:Slack calls without Google credentials; the signature authenticates
  source                = "./modules/function"
  project_id            = var.project_id
  region                = var.region
  source_bucket         = google_storage_bucket.function_source.name
  source_object         = var.function_source_object
  name                  = "${var.name_prefix}-slack-events"
  entry_point           = "slack_events"
  account_id            = "${var.name_prefix}-slack"
  account_display_name  = "askflow Slack webhook"
  max_instance_count    = 10
  min_instance_count    = 1 # Slack wants an answer within 3 seconds: no cold starts
  available_memory      = "512Mi"
  timeout_seconds       = 10
  ingress_settings      = "ALLOW_ALL"
  public                = true
  environment_variables = local.askflow_env
  secrets               = google_secret_manager_secret.secrets
  secret_env            = local.slack_secret_env
  project_roles         = ["roles/datastore.user", "roles/cloudtrace.agent"]
  publishes_to          = { questions = google_pubsub_topic.questions.name }
  depends_on            = [google_project_service.apis]
}

output "slack_request_url" {
  value = module.slack_events.uri
}

# HTTPS, private: Cloud Scheduler's requeue sweep. A request whose message was lost (dead-lettered) is queued
# again; one past its deadline is failed. Cloud Scheduler calls from outside the VPC (ingress ALLOW_ALL); only the
# scheduler's service account may invoke it.
module "requeue_unfinished" {
  # checkov:skip=CKV_GCP_124:Cloud Scheduler calls from outside the VPC; IAM admits only the scheduler's account
  source                = "./modules/function"
  project_id            = var.project_id
  region                = var.region
  source_bucket         = google_storage_bucket.function_source.name
  source_object         = var.function_source_object
  name                  = "${var.name_prefix}-requeue-unfinished"
  entry_point           = "requeue_unfinished"
  account_id            = "${var.name_prefix}-requeue"
  account_display_name  = "askflow requeue sweep"
  max_instance_count    = 1
  available_memory      = "256Mi"
  timeout_seconds       = 120
  ingress_settings      = "ALLOW_ALL"
  environment_variables = local.askflow_env
  project_roles         = ["roles/datastore.user"]
  publishes_to          = { questions = google_pubsub_topic.questions.name }
  invokers              = { scheduler = "serviceAccount:${google_service_account.scheduler.email}" }
  depends_on            = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "requeue_unfinished" {
  name     = "${var.name_prefix}-requeue-unfinished"
  region   = var.region
  schedule = var.requeue_schedule
  http_target {
    http_method = "POST"
    uri         = module.requeue_unfinished.uri
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = module.requeue_unfinished.uri
    }
  }
  depends_on = [google_project_service.apis]
}
