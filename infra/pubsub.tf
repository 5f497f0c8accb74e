resource "google_pubsub_topic" "questions" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption; question ids only, no content, travel on the topics
  name                       = var.questions_topic
  message_retention_duration = "86400s"
}

resource "google_pubsub_topic" "questions_dead_letter" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption; question ids only, no content, travel on the topics
  name = "${var.questions_topic}-dead-letter"
}

resource "google_pubsub_topic" "evaluation" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption; question ids only, no content, travel on the topics
  name                       = var.evaluation_topic
  message_retention_duration = "604800s"
}

resource "google_pubsub_topic" "evaluation_dead_letter" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption; question ids only, no content, travel on the topics
  name = "${var.evaluation_topic}-dead-letter"
}

# Questions are pushed to the answer worker, as the emulator push subscription does locally; functions-framework
# turns the push into the same CloudEvent Eventarc would deliver.
resource "google_pubsub_subscription" "questions" {
  name                 = var.questions_subscription
  topic                = google_pubsub_topic.questions.id
  ack_deadline_seconds = 300
  push_config {
    push_endpoint = module.answer_worker.uri
    oidc_token {
      service_account_email = google_service_account.pubsub_pusher.email
    }
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.questions_dead_letter.id
    max_delivery_attempts = 5
  }
}

resource "google_pubsub_subscription" "questions_dead_letter" {
  name                       = "${var.questions_topic}-dead-letter"
  topic                      = google_pubsub_topic.questions_dead_letter.id
  message_retention_duration = "604800s"
}

# Drained by the evaluation DAG's PubSubPullSensor in Cloud Composer.
resource "google_pubsub_subscription" "evaluation" {
  name                       = var.evaluation_subscription
  topic                      = google_pubsub_topic.evaluation.id
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"
  retry_policy {
    minimum_backoff = "30s"
    maximum_backoff = "600s"
  }
  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.evaluation_dead_letter.id
    max_delivery_attempts = 10
  }
}

resource "google_pubsub_subscription" "evaluation_dead_letter" {
  name                       = "${var.evaluation_topic}-dead-letter"
  topic                      = google_pubsub_topic.evaluation_dead_letter.id
  message_retention_duration = "604800s"
}
