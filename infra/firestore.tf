resource "google_firestore_database" "default" {
  name                    = "(default)"
  location_id             = var.region
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  depends_on              = [google_project_service.apis]
}

# Thread history: the latest earlier requests of a thread.
resource "google_firestore_index" "requests_by_thread" {
  database   = google_firestore_database.default.name
  collection = var.requests_collection
  fields {
    field_path = "thread_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Homepage feed: GET /requests?good=true lists verified answers, newest first.
resource "google_firestore_index" "verified_requests_by_recency" {
  database   = google_firestore_database.default.name
  collection = var.requests_collection
  fields {
    field_path = "verified"
    order      = "ASCENDING"
  }
  fields {
    field_path = "in_feed"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# The review queue (/admin/review): answers waiting for a reviewer, newest first.
resource "google_firestore_index" "review_queue_by_recency" {
  database   = google_firestore_database.default.name
  collection = var.requests_collection
  fields {
    field_path = "in_review"
    order      = "ASCENDING"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# The requeue sweep: unfinished requests, least recently changed first.
resource "google_firestore_index" "unfinished_requests_by_update" {
  database   = google_firestore_database.default.name
  collection = var.requests_collection
  fields {
    field_path = "status"
    order      = "ASCENDING"
  }
  fields {
    field_path = "updated_at"
    order      = "ASCENDING"
  }
}

# Lineage (askflow lineage --document): the requests whose answers drew on a document, newest first.
resource "google_firestore_index" "requests_citing_document" {
  database   = google_firestore_database.default.name
  collection = var.requests_collection
  fields {
    field_path   = "cited_docs"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
}

# Budget counters and reservations (one document per slot, identity and window) are deleted a day after their
# window ends.
resource "google_firestore_field" "budgets_expire" {
  database   = google_firestore_database.default.name
  collection = var.budgets_collection
  field      = "expires_at"
  ttl_config {}
}

# Requests (and their answers) are deleted once their expires_at has passed: the app writes it on each request,
# request_retention_days after it was created.
resource "google_firestore_field" "requests_expire" {
  database   = google_firestore_database.default.name
  collection = var.requests_collection
  field      = "expires_at"
  ttl_config {}
}
