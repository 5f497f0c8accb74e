output "uri" {
  value       = google_cloudfunctions2_function.function.service_config[0].uri
  description = "The function's HTTPS URL."
}

output "name" {
  value = google_cloudfunctions2_function.function.name
}

output "location" {
  value = google_cloudfunctions2_function.function.location
}

output "service_account_email" {
  value = google_service_account.function.email
}
