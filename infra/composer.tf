resource "google_composer_environment" "askflow" {
  name   = "${var.name_prefix}-composer"
  region = var.region
  config {
    software_config {
      image_version = "composer-3-airflow-3"
      pypi_packages = {
        "langchain-text-splitters" = ">=0.3"
        "beautifulsoup4"           = ">=4.12"
        "slack-sdk"                = ">=3.27"
        "GitPython"                = ">=3.1"
        "PyGithub"                 = ">=2.1"
        "openai"                   = ">=1.60"
        "pgvector"                 = ">=0.2.5"
        "psycopg"                  = "[binary,pool]>=3.1"
        "pydantic-settings"        = ">=2.3"
        "weaviate-client"          = ">=4.9,<5"
        # the DAGs' lineage events (lineage_task, asset aliases): the image ships the provider; this keeps it recent
        "apache-airflow-providers-openlineage" = ">=2.1,<3"
      }
      # The data folder is the environment bucket's data/, which every worker mounts: the fine-tuning DAG's pairs
      # and models written by one task are read by the next, wherever it runs.
      env_variables = merge(local.askflow_env, { ASKFLOW_DATA_DIR = "/home/airflow/gcs/data/askflow" })
      # The OpenLineage events of the DAGs' runs (their locations, the collection, the graded answers) go to
      # Dataplex's Data Lineage API (datalineage.googleapis.com).
      cloud_data_lineage_integration {
        enabled = true
      }
    }
    node_config {
      service_account = google_service_account.composer.email
    }
  }
  depends_on = [google_project_service.apis, google_project_iam_member.composer_worker]
}

output "composer_dag_gcs_prefix" {
  value = google_composer_environment.askflow.config[0].dag_gcs_prefix
}
