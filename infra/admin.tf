# The admin function behind Identity-Aware Proxy (admin_iap): a global external HTTPS load balancer whose backend is
# a serverless NEG of the function, with IAP on the backend service. IAP admits admin_invokers and signs each request
# (x-goog-iap-jwt-assertion), which the function verifies against the backend service's audience. Without admin_iap
# nothing here is created and IAM on the function alone (admin_invokers) guards it.

data "google_project" "this" {}

locals {
  admin_function = "${var.name_prefix}-admin"
  # IAP invokes the function as its service agent
  iap_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-iap.iam.gserviceaccount.com"
  admin_run_invokers = var.admin_iap ? { iap = local.iap_agent } : {
    for member in var.admin_invokers : member => member
  }
  admin_iap_env = var.admin_iap ? {
    ASKFLOW_IAP_AUDIENCE       = "/projects/${data.google_project.this.number}/global/backendServices/${google_compute_backend_service.admin[0].generated_id}"
    ASKFLOW_IAP_ADMINS         = jsonencode(var.iap_admins)
    ASKFLOW_IAP_AUDIENCE_RULES = jsonencode(var.iap_audience_rules)
  } : {}
}

resource "google_compute_region_network_endpoint_group" "admin" {
  count                 = var.admin_iap ? 1 : 0
  name                  = "${var.name_prefix}-admin-neg"
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = local.admin_function # the function's Cloud Run service (a name: the function's env needs this NEG)
  }
}

resource "google_compute_backend_service" "admin" {
  count                 = var.admin_iap ? 1 : 0
  name                  = "${var.name_prefix}-admin"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  backend {
    group = google_compute_region_network_endpoint_group.admin[0].id
  }
  iap {
    enabled = true
  }
  log_config {
    enable = true
  }
}

resource "google_iap_web_backend_service_iam_member" "admin_users" {
  for_each            = var.admin_iap ? toset(var.admin_invokers) : toset([])
  web_backend_service = google_compute_backend_service.admin[0].name
  role                = "roles/iap.httpsResourceAccessor"
  member              = each.value
}

resource "google_compute_url_map" "admin" {
  count           = var.admin_iap ? 1 : 0
  name            = "${var.name_prefix}-admin"
  default_service = google_compute_backend_service.admin[0].id
}

resource "google_compute_managed_ssl_certificate" "admin" {
  count = var.admin_iap ? 1 : 0
  name  = "${var.name_prefix}-admin"
  managed {
    domains = [var.admin_domain]
  }
  lifecycle {
    precondition {
      condition     = var.admin_domain != ""
      error_message = "admin_iap needs admin_domain: the host name of the admin pages' certificate."
    }
  }
}

resource "google_compute_ssl_policy" "admin" {
  count           = var.admin_iap ? 1 : 0
  name            = "${var.name_prefix}-admin"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "admin" {
  count            = var.admin_iap ? 1 : 0
  name             = "${var.name_prefix}-admin"
  url_map          = google_compute_url_map.admin[0].id
  ssl_certificates = [google_compute_managed_ssl_certificate.admin[0].id]
  ssl_policy       = google_compute_ssl_policy.admin[0].id
}

resource "google_compute_global_address" "admin" {
  count = var.admin_iap ? 1 : 0
  name  = "${var.name_prefix}-admin"
}

resource "google_compute_global_forwarding_rule" "admin" {
  count                 = var.admin_iap ? 1 : 0
  name                  = "${var.name_prefix}-admin"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  port_range            = "443"
  target                = google_compute_target_https_proxy.admin[0].id
  ip_address            = google_compute_global_address.admin[0].id
}

output "admin_ip" {
  value       = var.admin_iap ? google_compute_global_address.admin[0].address : null
  description = "With admin_iap: the address admin_domain's A record points at."
}
