# One askflow Cloud Function (gen2) with everything that is its own: its service account, the project roles and
# topics that account uses, read access to the secrets it is given as environment variables, its event trigger (the
# trigger's account is the function's), and who may invoke it.
terraform {
  required_providers {
    google = {
      source = "hashicorp/google"
    }
  }
}

resource "google_service_account" "function" {
  account_id   = var.account_id
  display_name = var.account_display_name
}

resource "google_cloudfunctions2_function" "function" {
  name     = var.name
  location = var.region
  build_config {
    runtime     = "python311"
    entry_point = var.entry_point
    source {
      storage_source {
        bucket = var.source_bucket
        object = var.source_object
      }
    }
  }
  service_config {
    max_instance_count    = var.max_instance_count
    min_instance_count    = var.min_instance_count
    available_memory      = var.available_memory
    timeout_seconds       = var.timeout_seconds
    service_account_email = google_service_account.function.email
    environment_variables = var.environment_variables
    ingress_settings      = var.ingress_settings
    dynamic "secret_environment_variables" {
      for_each = var.secret_env
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = var.secrets[secret_environment_variables.key].secret_id
        version    = "latest"
      }
    }
  }
  dynamic "event_trigger" {
    for_each = var.event_trigger[*]
    content {
      trigger_region        = var.region
      event_type            = event_trigger.value.event_type
      retry_policy          = event_trigger.value.retry_policy
      service_account_email = google_service_account.function.email
      dynamic "event_filters" {
        for_each = event_trigger.value.event_filters
        content {
          attribute = event_filters.value.attribute
          value     = event_filters.value.value
          operator  = event_filters.value.operator
        }
      }
    }
  }
  lifecycle {
    precondition {
      condition     = alltrue([for setting in keys(var.secret_env) : contains(keys(var.secrets), setting)])
      error_message = "secret_env names a setting that secrets has no Secret Manager secret for."
    }
  }
}

resource "google_project_iam_member" "roles" {
  for_each = var.project_roles
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.function.email}"
}

resource "google_pubsub_topic_iam_member" "publishes" {
  for_each = var.publishes_to
  topic    = each.value
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.function.email}"
}

resource "google_secret_manager_secret_iam_member" "reads" {
  for_each  = var.secret_env
  secret_id = var.secrets[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function.email}"
}

# An Eventarc trigger delivers as the function's own account: it receives the events and invokes the function.
resource "google_project_iam_member" "trigger_receives_events" {
  count   = var.event_trigger == null ? 0 : 1
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.function.email}"
}

resource "google_cloud_run_service_iam_member" "trigger_invokes" {
  count    = var.event_trigger == null ? 0 : 1
  location = google_cloudfunctions2_function.function.location
  service  = google_cloudfunctions2_function.function.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.function.email}"
}

resource "google_cloud_run_service_iam_member" "invokers" {
  for_each = var.invokers
  location = google_cloudfunctions2_function.function.location
  service  = google_cloudfunctions2_function.function.name
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_service_iam_member" "public" {
  count    = var.public ? 1 : 0
  location = google_cloudfunctions2_function.function.location
  service  = google_cloudfunctions2_function.function.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
