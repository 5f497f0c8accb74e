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

# HTTPS: POST /requests, GET /requests/{id}.
resource "google_cloudfunctions2_function" "api" {
  # checkov:skip=CKV_GCP_124:serves the public web page and API (set api_authenticated for an API key)
  name     = "${var.name_prefix}-api"
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = "api"
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = var.function_source_object
      }
    }
  }
  service_config {
    max_instance_count    = 20
    available_memory      = "512Mi"
    timeout_seconds       = 30
    service_account_email = google_service_account.api.email
    environment_variables = local.askflow_env
    ingress_settings      = "ALLOW_ALL"
    dynamic "secret_environment_variables" {
      for_each = var.api_authenticated ? { api_key = "ASKFLOW_API_KEY" } : {}
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

# Pub/Sub push (questions subscription): answers one request per message.
resource "google_cloudfunctions2_function" "answer_worker" {
  name     = "${var.name_prefix}-answer-worker"
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = "answer_worker"
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = var.function_source_object
      }
    }
  }
  service_config {
    max_instance_count    = 20
    available_memory      = "1Gi"
    timeout_seconds       = 300
    service_account_email = google_service_account.worker.email
    environment_variables = local.askflow_env
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    dynamic "secret_environment_variables" {
      for_each = local.secret_env
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

output "api_url" {
  value = google_cloudfunctions2_function.api.service_config[0].uri
}

# Firestore (requests/{id} written, via Eventarc): queues an evaluation event when grading is due.
resource "google_cloudfunctions2_function" "request_written" {
  name     = "${var.name_prefix}-request-written"
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = "request_written"
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = var.function_source_object
      }
    }
  }
  service_config {
    max_instance_count    = 10
    available_memory      = "256Mi"
    timeout_seconds       = 60
    service_account_email = google_service_account.trigger.email
    environment_variables = local.askflow_env
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
  }
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.firestore.document.v1.written"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.trigger.email
    event_filters {
      attribute = "database"
      value     = google_firestore_database.default.name
    }
    event_filters {
      attribute = "document"
      value     = "${var.requests_collection}/{id}"
      operator  = "match-path-pattern"
    }
  }
  depends_on = [google_project_service.apis]
}

# HTTPS: Slack Events API and interactivity (signature-checked by slack_bolt).
resource "google_cloudfunctions2_function" "slack_events" {
  # checkov:skip=CKV_GCP_124:Slack must reach it; every request is signature-checked
  name     = "${var.name_prefix}-slack-events"
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = "slack_events"
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = var.function_source_object
      }
    }
  }
  service_config {
    max_instance_count    = 10
    min_instance_count    = 1 # Slack wants an answer within 3 seconds: no cold starts
    available_memory      = "512Mi"
    timeout_seconds       = 10
    service_account_email = google_service_account.slack.email
    environment_variables = local.askflow_env
    ingress_settings      = "ALLOW_ALL"
    dynamic "secret_environment_variables" {
      for_each = local.slack_secret_env
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

output "slack_request_url" {
  value = google_cloudfunctions2_function.slack_events.service_config[0].uri
}

# HTTPS, private: Cloud Scheduler's requeue sweep. A request whose message was lost (dead-lettered) is queued
# again; one past its deadline is failed. Only the scheduler's service account may invoke it.
resource "google_cloudfunctions2_function" "requeue_unfinished" {
  # checkov:skip=CKV_GCP_124:Cloud Scheduler calls from outside the VPC; IAM admits only the scheduler's account
  name     = "${var.name_prefix}-requeue-unfinished"
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = "requeue_unfinished"
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = var.function_source_object
      }
    }
  }
  service_config {
    max_instance_count    = 1
    available_memory      = "256Mi"
    timeout_seconds       = 120
    service_account_email = google_service_account.requeue.email
    environment_variables = local.askflow_env
    ingress_settings      = "ALLOW_ALL"
  }
  depends_on = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "requeue_unfinished" {
  name     = "${var.name_prefix}-requeue-unfinished"
  region   = var.region
  schedule = var.requeue_schedule
  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.requeue_unfinished.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.requeue_unfinished.service_config[0].uri
    }
  }
  depends_on = [google_project_service.apis]
}
