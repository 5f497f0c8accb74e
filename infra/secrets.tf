# Values are added out of band: `gcloud secrets versions add SECRET_ID --data-file=-`.
resource "google_secret_manager_secret" "secrets" {
  for_each  = var.secrets
  secret_id = each.value
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}
