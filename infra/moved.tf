# Where each resource was before the functions became modules/function: an existing deployment moves them in its
# state instead of destroying and creating them again.

# api
moved {
  from = google_cloudfunctions2_function.api
  to   = module.api.google_cloudfunctions2_function.function
}

moved {
  from = google_service_account.api
  to   = module.api.google_service_account.function
}

moved {
  from = google_project_iam_member.firestore_users["api"]
  to   = module.api.google_project_iam_member.roles["roles/datastore.user"]
}

moved {
  from = google_project_iam_member.trace_writers["api"]
  to   = module.api.google_project_iam_member.roles["roles/cloudtrace.agent"]
}

moved {
  from = google_pubsub_topic_iam_member.api_publishes_questions
  to   = module.api.google_pubsub_topic_iam_member.publishes["questions"]
}

moved {
  from = google_secret_manager_secret_iam_member.api_reads_api_key[0]
  to   = module.api.google_secret_manager_secret_iam_member.reads["api_key"]
}

moved {
  from = google_cloud_run_service_iam_member.public_api
  to   = module.api.google_cloud_run_service_iam_member.public[0]
}

# answer_worker
moved {
  from = google_cloudfunctions2_function.answer_worker
  to   = module.answer_worker.google_cloudfunctions2_function.function
}

moved {
  from = google_service_account.worker
  to   = module.answer_worker.google_service_account.function
}

moved {
  from = google_project_iam_member.firestore_users["worker"]
  to   = module.answer_worker.google_project_iam_member.roles["roles/datastore.user"]
}

moved {
  from = google_project_iam_member.trace_writers["worker"]
  to   = module.answer_worker.google_project_iam_member.roles["roles/cloudtrace.agent"]
}

moved {
  from = google_secret_manager_secret_iam_member.worker_reads_secrets
  to   = module.answer_worker.google_secret_manager_secret_iam_member.reads
}

moved {
  from = google_cloud_run_service_iam_member.pusher_runs_worker
  to   = module.answer_worker.google_cloud_run_service_iam_member.invokers["pubsub_pusher"]
}

# request_written
moved {
  from = google_cloudfunctions2_function.request_written
  to   = module.request_written.google_cloudfunctions2_function.function
}

moved {
  from = google_service_account.trigger
  to   = module.request_written.google_service_account.function
}

moved {
  from = google_project_iam_member.trace_writers["trigger"]
  to   = module.request_written.google_project_iam_member.roles["roles/cloudtrace.agent"]
}

moved {
  from = google_pubsub_topic_iam_member.trigger_publishes_evaluation
  to   = module.request_written.google_pubsub_topic_iam_member.publishes["evaluation"]
}

moved {
  from = google_project_iam_member.trigger_receives_events
  to   = module.request_written.google_project_iam_member.trigger_receives_events[0]
}

moved {
  from = google_cloud_run_service_iam_member.trigger_runs_itself
  to   = module.request_written.google_cloud_run_service_iam_member.trigger_invokes[0]
}

# slack_events
moved {
  from = google_cloudfunctions2_function.slack_events
  to   = module.slack_events.google_cloudfunctions2_function.function
}

moved {
  from = google_service_account.slack
  to   = module.slack_events.google_service_account.function
}

moved {
  from = google_project_iam_member.firestore_users["slack"]
  to   = module.slack_events.google_project_iam_member.roles["roles/datastore.user"]
}

moved {
  from = google_project_iam_member.trace_writers["slack"]
  to   = module.slack_events.google_project_iam_member.roles["roles/cloudtrace.agent"]
}

moved {
  from = google_pubsub_topic_iam_member.slack_publishes_questions
  to   = module.slack_events.google_pubsub_topic_iam_member.publishes["questions"]
}

moved {
  from = google_secret_manager_secret_iam_member.slack_reads_secrets
  to   = module.slack_events.google_secret_manager_secret_iam_member.reads
}

moved {
  from = google_cloud_run_service_iam_member.public_slack_events
  to   = module.slack_events.google_cloud_run_service_iam_member.public[0]
}

# requeue_unfinished
moved {
  from = google_cloudfunctions2_function.requeue_unfinished
  to   = module.requeue_unfinished.google_cloudfunctions2_function.function
}

moved {
  from = google_service_account.requeue
  to   = module.requeue_unfinished.google_service_account.function
}

moved {
  from = google_project_iam_member.firestore_users["requeue"]
  to   = module.requeue_unfinished.google_project_iam_member.roles["roles/datastore.user"]
}

moved {
  from = google_pubsub_topic_iam_member.requeue_publishes_questions
  to   = module.requeue_unfinished.google_pubsub_topic_iam_member.publishes["questions"]
}

moved {
  from = google_cloud_run_service_iam_member.scheduler_runs_requeue
  to   = module.requeue_unfinished.google_cloud_run_service_iam_member.invokers["scheduler"]
}

# mcp
moved {
  from = google_cloudfunctions2_function.mcp
  to   = module.mcp.google_cloudfunctions2_function.function
}

moved {
  from = google_service_account.mcp
  to   = module.mcp.google_service_account.function
}

moved {
  from = google_project_iam_member.mcp_uses_firestore
  to   = module.mcp.google_project_iam_member.roles["roles/datastore.user"]
}

moved {
  from = google_project_iam_member.trace_writers["mcp"]
  to   = module.mcp.google_project_iam_member.roles["roles/cloudtrace.agent"]
}

moved {
  from = google_pubsub_topic_iam_member.mcp_publishes_questions
  to   = module.mcp.google_pubsub_topic_iam_member.publishes["questions"]
}

moved {
  from = google_secret_manager_secret_iam_member.mcp_reads_secrets
  to   = module.mcp.google_secret_manager_secret_iam_member.reads
}

moved {
  from = google_cloud_run_service_iam_member.public_mcp
  to   = module.mcp.google_cloud_run_service_iam_member.public[0]
}

# Composer's own roles, before in the lists of every account's
moved {
  from = google_project_iam_member.firestore_users["composer"]
  to   = google_project_iam_member.composer_uses_firestore
}

moved {
  from = google_project_iam_member.trace_writers["composer"]
  to   = google_project_iam_member.composer_writes_traces
}
