resource "google_service_account" "api" {
  account_id   = "${var.name_prefix}-api"
  display_name = "askflow HTTPS API"
}

resource "google_service_account" "worker" {
  account_id   = "${var.name_prefix}-worker"
  display_name = "askflow answer worker"
}

resource "google_service_account" "pubsub_pusher" {
  account_id   = "${var.name_prefix}-pubsub-pusher"
  display_name = "Pub/Sub push identity for the answer worker"
}

resource "google_service_account" "composer" {
  account_id   = "${var.name_prefix}-composer"
  display_name = "askflow Cloud Composer"
}

# Firestore has no per-collection IAM: every account that reads or writes requests needs datastore.user on the
# project — the API and the worker, the Slack webhook, the requeue sweep, and Composer (the evaluation DAG writes
# grades back).
resource "google_project_iam_member" "firestore_users" {
  for_each = {
    api      = google_service_account.api.email
    worker   = google_service_account.worker.email
    slack    = google_service_account.slack.email
    requeue  = google_service_account.requeue.email
    composer = google_service_account.composer.email
  }
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${each.value}"
}

resource "google_project_iam_member" "composer_worker" {
  # checkov:skip=CKV_GCP_49:Cloud Composer requires roles/composer.worker on its environment's service account
  project = var.project_id
  role    = "roles/composer.worker"
  member  = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_pubsub_topic_iam_member" "api_publishes_questions" {
  topic  = google_pubsub_topic.questions.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.api.email}"
}

resource "google_pubsub_subscription_iam_member" "composer_pulls_evaluation" {
  subscription = google_pubsub_subscription.evaluation.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_cloudfunctions2_function_iam_member" "pusher_invokes_worker" {
  location       = google_cloudfunctions2_function.answer_worker.location
  cloud_function = google_cloudfunctions2_function.answer_worker.name
  role           = "roles/cloudfunctions.invoker"
  member         = "serviceAccount:${google_service_account.pubsub_pusher.email}"
}

resource "google_cloud_run_service_iam_member" "pusher_runs_worker" {
  location = google_cloudfunctions2_function.answer_worker.location
  service  = google_cloudfunctions2_function.answer_worker.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_pusher.email}"
}

resource "google_cloud_run_service_iam_member" "public_api" {
  # checkov:skip=CKV_GCP_102:serves the public web page and API (set api_authenticated for an API key)
  location = google_cloudfunctions2_function.api.location
  service  = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_secret_manager_secret_iam_member" "worker_reads_secrets" {
  for_each  = local.secret_env
  secret_id = google_secret_manager_secret.secrets[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "composer_reads_documents" {
  bucket = google_storage_bucket.documents.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_service_account" "trigger" {
  account_id   = "${var.name_prefix}-trigger"
  display_name = "askflow Firestore trigger"
}

resource "google_project_iam_member" "trigger_receives_events" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.trigger.email}"
}

resource "google_cloud_run_service_iam_member" "trigger_runs_itself" {
  location = google_cloudfunctions2_function.request_written.location
  service  = google_cloudfunctions2_function.request_written.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger.email}"
}

resource "google_pubsub_topic_iam_member" "trigger_publishes_evaluation" {
  topic  = google_pubsub_topic.evaluation.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.trigger.email}"
}

resource "google_service_account" "slack" {
  account_id   = "${var.name_prefix}-slack"
  display_name = "askflow Slack webhook"
}

resource "google_pubsub_topic_iam_member" "slack_publishes_questions" {
  topic  = google_pubsub_topic.questions.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.slack.email}"
}

resource "google_secret_manager_secret_iam_member" "slack_reads_secrets" {
  for_each  = local.slack_secret_env
  secret_id = google_secret_manager_secret.secrets[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.slack.email}"
}

# Slack calls the webhook without Google credentials; the signature is the authentication.
resource "google_cloud_run_service_iam_member" "public_slack_events" {
  # checkov:skip=CKV_GCP_102:Slack calls without Google credentials; the signature authenticates
  location = google_cloudfunctions2_function.slack_events.location
  service  = google_cloudfunctions2_function.slack_events.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_secret_manager_secret_iam_member" "api_reads_api_key" {
  count     = var.api_authenticated ? 1 : 0
  secret_id = google_secret_manager_secret.secrets["api_key"].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.api.email}"
}

# The requeue sweep queues questions again (its Firestore access is above); the scheduler may only invoke it.
resource "google_service_account" "requeue" {
  account_id   = "${var.name_prefix}-requeue"
  display_name = "askflow requeue sweep"
}

resource "google_pubsub_topic_iam_member" "requeue_publishes_questions" {
  topic  = google_pubsub_topic.questions.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.requeue.email}"
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Cloud Scheduler identity for the requeue sweep"
}

resource "google_cloud_run_service_iam_member" "scheduler_runs_requeue" {
  location = google_cloudfunctions2_function.requeue_unfinished.location
  service  = google_cloudfunctions2_function.requeue_unfinished.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# Every process that opens spans writes them to Cloud Trace.
resource "google_project_iam_member" "trace_writers" {
  for_each = {
    api      = google_service_account.api.email
    worker   = google_service_account.worker.email
    slack    = google_service_account.slack.email
    trigger  = google_service_account.trigger.email
    mcp      = google_service_account.mcp.email
    composer = google_service_account.composer.email
  }
  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${each.value}"
}
