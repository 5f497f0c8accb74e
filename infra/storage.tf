resource "google_storage_bucket" "documents" {
  name                        = var.documents_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  versioning {
    enabled = true
  }
}
