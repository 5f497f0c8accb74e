variable "project_id" {
  type        = string
  description = "Google Cloud project of the function, its account and its IAM bindings."
}

variable "region" {
  type        = string
  description = "Region of the function and of its event trigger."
}

variable "name" {
  type        = string
  description = "The function's name (its Cloud Run service has the same)."
}

variable "entry_point" {
  type        = string
  description = "The function in functions/main.py that it runs."
}

variable "account_id" {
  type        = string
  description = "Account id of the function's own service account."
}

variable "account_display_name" {
  type        = string
  description = "Display name of the function's service account."
}

variable "source_bucket" {
  type        = string
  description = "Bucket holding the packaged functions source."
}

variable "source_object" {
  type        = string
  description = "Object in source_bucket holding functions/ with the packaged core."
}

variable "max_instance_count" {
  type = number
}

variable "min_instance_count" {
  type        = number
  default     = null
  description = "Instances kept warm; none unless set."
}

variable "available_memory" {
  type = string
}

variable "timeout_seconds" {
  type = number
}

variable "ingress_settings" {
  type        = string
  description = "ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress_settings)
    error_message = "ingress_settings must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "environment_variables" {
  type        = map(string)
  description = "The settings the function reads (askflow.config.Settings), as ASKFLOW_* variables."
}

variable "secrets" {
  type = map(object({
    id        = string
    secret_id = string
  }))
  default     = {}
  description = "Setting name -> its Secret Manager secret (google_secret_manager_secret.secrets)."
}

variable "secret_env" {
  type        = map(string)
  default     = {}
  description = "The secrets the function reads: setting name (a key of secrets) -> its environment variable."
}

variable "project_roles" {
  type        = set(string)
  default     = []
  description = "Project roles of the function's account (roles/datastore.user, roles/cloudtrace.agent)."
}

variable "publishes_to" {
  type        = map(string)
  default     = {}
  description = "Topics the function's account publishes to: a name that stays the same -> the topic's name."
}

variable "event_trigger" {
  type = object({
    event_type   = string
    retry_policy = string
    event_filters = list(object({
      attribute = string
      value     = string
      operator  = optional(string)
    }))
  })
  default     = null
  description = "An Eventarc trigger delivering CloudEvents to the function as its own account; none for HTTPS."
}

variable "invokers" {
  type        = map(string)
  default     = {}
  description = "Who else may invoke the function (roles/run.invoker): a name that stays the same -> the member."
}

variable "public" {
  type        = bool
  default     = false
  description = "Anyone may invoke the function (allUsers): for callers without Google credentials."
}
