resource "google_storage_bucket" "documents" {
  name                        = var.documents_bucket
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

# The question-insights reports' HTML and CSV (askflow_question_insights); apart from the documents, which the docs
# DAG ingests whole.
resource "google_storage_bucket" "insights" {
  name                        = var.insights_bucket
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

resource "google_storage_bucket_iam_member" "composer_writes_insights" {
  bucket = google_storage_bucket.insights.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.composer.email}"
}

resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62:this is the access-log sink of the other buckets; it does not log itself
  name                        = "${var.project_id}-${var.name_prefix}-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
}
