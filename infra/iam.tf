# The accounts that are no function's own (each function's account and its IAM are in modules/function).

resource "google_service_account" "pubsub_pusher" {
  account_id   = "${var.name_prefix}-pubsub-pusher"
  display_name = "Pub/Sub push identity for the answer worker"
}

# Besides roles/run.invoker on the worker's service (the worker's invokers), the Cloud Functions invoker role.
resource "google_cloudfunctions2_function_iam_member" "pusher_invokes_worker" {
  location       = module.answer_worker.location
  cloud_function = module.answer_worker.name
  role           = "roles/cloudfunctions.invoker"
  member         = "serviceAccount:${google_service_account.pubsub_pusher.email}"
}

resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "Cloud Scheduler identity for the requeue sweep"
}

resource "google_service_account" "composer" {
  account_id   = "${var.name_prefix}-composer"
  display_name = "askflow Cloud Composer"
}

# The evaluation DAG writes grades back to the requests.
resource "google_project_iam_member" "composer_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_project_iam_member" "composer_writes_traces" {
  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_project_iam_member" "composer_worker" {
  # checkov:skip=CKV_GCP_49:Cloud Composer requires roles/composer.worker on its environment's service account
  project = var.project_id
  role    = "roles/composer.worker"
  member  = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_pubsub_subscription_iam_member" "composer_pulls_evaluation" {
  subscription = google_pubsub_subscription.evaluation.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_storage_bucket_iam_member" "composer_reads_documents" {
  bucket = google_storage_bucket.documents.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.composer.email}"
}
