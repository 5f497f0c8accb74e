"""Terraform, cloudbuild.yaml and the code must name the same things: these fail when they drift."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import hcl2
import pytest
import yaml
from pydantic import SecretStr

from askflow.config import Settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
VAR = re.compile(r"\$\{var\.(\w+)\}")

# Settings that name a cloud resource or a model: Terraform must set every one of them on the functions.
NAMED_SETTINGS = (
    "project_id", "requests_collection", "questions_topic", "questions_subscription", "evaluation_topic",
    "evaluation_subscription", "evaluation_runs_collection", "finetune_runs_collection", "serving_collection",
    "documents_bucket", "insights_collection", "budgets_collection", "collection", "cheap_model",
    "strong_model", "embedding_model",
)


def _unquote(value):
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


@pytest.fixture(scope="module")
def terraform() -> dict:
    merged: dict = {"resource": {}, "variable": {}, "locals": {}}
    for file in sorted(INFRA.glob("*.tf")):
        with file.open() as handle:
            parsed = _unquote(hcl2.load(handle))
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                merged["resource"].setdefault(kind, {}).update(named)
        for block in parsed.get("variable", []):
            merged["variable"].update(block)
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
    return merged


def _resolve(value: str, terraform: dict) -> str:
    return VAR.sub(lambda m: str(terraform["variable"][m[1]].get("default", f"<{m[1]}>")), value)


def _names(terraform: dict, kind: str) -> set[str]:
    return {_resolve(r["name"], terraform) for r in terraform["resource"].get(kind, {}).values()}


def _entry_points() -> dict[str, str]:
    """``function name -> "http" | "cloud_event"`` from functions/main.py's decorators."""
    tree = ast.parse((ROOT / "functions" / "main.py").read_text())
    kinds = {}
    for node in ast.walk(tree):  # mcp is defined only when it is the target
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Attribute) and decorator.attr in ("http", "cloud_event"):
                    kinds[node.name] = decorator.attr
    return kinds


def test_topics_and_subscriptions_match_the_settings(terraform):
    settings = Settings()
    topics = {settings.questions_topic, settings.evaluation_topic}
    assert _names(terraform, "google_pubsub_topic") == topics | {f"{t}-dead-letter" for t in topics}
    subscriptions = {settings.questions_subscription, settings.evaluation_subscription}
    assert _names(terraform, "google_pubsub_subscription") == subscriptions | {f"{t}-dead-letter" for t in topics}
    for subscription in terraform["resource"]["google_pubsub_subscription"].values():
        if not subscription["name"].endswith("-dead-letter"):
            assert "dead_letter_policy" in subscription and "retry_policy" in subscription


def test_bucket_collection_and_index_match_the_settings(terraform):
    settings = Settings()
    assert settings.documents_bucket in _names(terraform, "google_storage_bucket")
    assert terraform["variable"]["insights_bucket"]["default"] in _names(terraform, "google_storage_bucket")
    indexes = terraform["resource"]["google_firestore_index"].values()
    assert {_resolve(i["collection"], terraform) for i in indexes} == {settings.requests_collection}


def test_every_named_setting_is_set_by_terraform_and_nothing_unknown(terraform):
    env = terraform["locals"]["askflow_env"]
    fields = set(Settings.model_fields)
    for name in NAMED_SETTINGS:
        assert f"ASKFLOW_{name.upper()}" in env, f"Terraform does not set {name}"
    for variable in [*env, *terraform["locals"]["secret_env"].values(),
                     *terraform["locals"]["slack_secret_env"].values(), "ASKFLOW_MCP_ALLOWED_HOSTS"]:
        assert variable.removeprefix("ASKFLOW_").lower() in fields, f"{variable} is not a setting"
    for name in NAMED_SETTINGS[1:]:
        default = terraform["variable"].get(name, {}).get("default")
        if default is not None and name not in ("embedding_model",):
            assert default == getattr(Settings(), name), f"variable {name} default drifted from the settings"


def test_the_requeue_sweep_is_scheduled_privately(terraform):
    job = next(iter(terraform["resource"]["google_cloud_scheduler_job"].values()))
    target = job["http_target"][0]
    assert "google_cloudfunctions2_function.requeue_unfinished" in target["uri"]
    scheduler = re.search(r"google_service_account\.(\w+)\.", target["oidc_token"][0]["service_account_email"])[1]
    invokers = [m for m in terraform["resource"]["google_cloud_run_service_iam_member"].values()
                if "requeue_unfinished" in m["service"]]
    assert [m["member"] for m in invokers] == [f"serviceAccount:${{google_service_account.{scheduler}.email}}"]


def test_every_secret_setting_has_a_secret_and_back(terraform):
    secret_settings = {
        name for name, field in Settings.model_fields.items()
        if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    } - {"github_token"}
    declared = set(terraform["variable"]["secrets"]["default"])
    assert secret_settings <= declared
    assert declared - secret_settings <= {"weaviate_url"}  # a URL, not a secret value, but kept out of plain env
    assert set(terraform["resource"]["google_secret_manager_secret"]) == {"secrets"}


def test_terraform_functions_exist_with_the_right_signature(terraform):
    entry_points = _entry_points()
    subscriptions = terraform["resource"]["google_pubsub_subscription"].values()
    pushed = {
        m[1] for s in subscriptions for m in
        [re.search(r"google_cloudfunctions2_function\.(\w+)\.", str(s.get("push_config", "")))] if m
    }
    functions = terraform["resource"]["google_cloudfunctions2_function"]
    assert functions, "no functions in Terraform"
    for name, function in functions.items():
        entry = function["build_config"][0]["entry_point"] if isinstance(function["build_config"], list) else \
            function["build_config"]["entry_point"]
        assert entry in entry_points, f"Terraform deploys {entry}, which functions/main.py does not define"
        expected = "cloud_event" if name in pushed or "event_trigger" in function else "http"
        assert entry_points[entry] == expected, f"{entry} should be a {expected} function"
    assert {f["build_config"][0]["entry_point"] for f in functions.values()} == set(entry_points)


def test_cloudbuild_deploys_the_same_functions(terraform):
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    deployed = {
        arg.split("=", 1)[1] for step in build["steps"] for arg in step.get("args", [])
        if isinstance(arg, str) and arg.startswith("--entry-point=")
    }
    entry_points = _entry_points()
    assert deployed == set(entry_points)
    terraform_entries = {
        f["build_config"][0]["entry_point"] for f in terraform["resource"]["google_cloudfunctions2_function"].values()
    }
    assert deployed == terraform_entries
    for step in build["steps"]:
        args = step.get("args", [])
        if "--entry-point=answer_worker" in args or "--entry-point=requeue_unfinished" in args:
            assert "--no-allow-unauthenticated" in args
    assert {"test", "package", "sync-dags", "smoke"} <= {step["id"] for step in build["steps"]}


CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


@pytest.mark.skipif(not CHECKOV.exists(), reason="`make test` installs checkov into .venv-checkov")
def test_checkov_passes_and_every_skipped_check_says_why():
    run = subprocess.run(
        [str(CHECKOV), "-d", str(INFRA), "--config-file", str(INFRA / ".checkov.yaml"), "-o", "json"],
        capture_output=True, text=True, timeout=600,
    )
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    terraform = next(r for r in reports if r["check_type"] == "terraform")
    assert terraform["summary"]["failed"] == 0, [c["check_id"] for c in terraform["results"]["failed_checks"]]
    assert terraform["summary"]["passed"] > 40
    for check in terraform["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment") or "No comment provided"
        assert reason != "No comment provided", f"{check['check_id']} skipped without a reason"


def test_the_functions_package_holds_the_core_without_the_dev_room(tmp_path):
    """What Cloud Build (and the README's deploy steps) package: the entry points, their requirements, and the core
    as a local package, never the local stack and the demo."""
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    package = next(step for step in build["steps"] if step["id"] == "package")
    assert package["args"] == ["infra/package-functions.sh"]
    for name in ("askflow", "functions", "infra", "pyproject.toml", "README.md"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    subprocess.run(["bash", str(tmp_path / "infra" / "package-functions.sh")], check=True, capture_output=True)
    with zipfile.ZipFile(tmp_path / "build" / "functions-source.zip") as archive:
        names = set(archive.namelist())
    assert {"main.py", "requirements.txt", "askflow_core/pyproject.toml", "askflow_core/askflow/bootstrap.py",
            "askflow_core/askflow/web/static/index.html"} <= names
    assert not [name for name in names if "/dev/" in name or "__pycache__" in name]
    assert "./askflow_core" in (ROOT / "functions" / "requirements.txt").read_text()
