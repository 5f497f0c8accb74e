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
FUNCTION_MODULE = "./modules/function"
ADDRESS = re.compile(r"^(?:module\.(\w+)\.)?(\w+)\.(\w+)(?:\[(?:\"([^\"]*)\"|(\d+))\])?$")

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


def _load(folder: Path) -> dict:
    """The resources, variables, locals, module calls and moved blocks of one Terraform module's folder."""
    merged: dict = {"resource": {}, "variable": {}, "locals": {}, "module": {}, "moved": []}
    for file in sorted(folder.glob("*.tf")):
        with file.open() as handle:
            parsed = _unquote(hcl2.load(handle))
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                merged["resource"].setdefault(kind, {}).update(named)
        for section in ("variable", "locals", "module"):
            for block in parsed.get(section, []):
                merged[section].update(block)
        merged["moved"] += parsed.get("moved", [])
    return merged


@pytest.fixture(scope="module")
def terraform() -> dict:
    """infra/ itself, with its modules under ``modules`` by folder name."""
    root = _load(INFRA)
    root["modules"] = {folder.name: _load(folder) for folder in sorted((INFRA / "modules").iterdir())}
    return root


def _functions(terraform: dict) -> dict[str, dict]:
    """``call name -> arguments`` of the module calls that deploy a function."""
    return {name: call for name, call in terraform["module"].items() if call["source"] == FUNCTION_MODULE}


def _function_module(terraform: dict) -> dict:
    return terraform["modules"][FUNCTION_MODULE.rsplit("/", 1)[1]]


def _deployed_function(terraform: dict) -> dict:
    """The function resource of modules/function, which every call deploys."""
    (function,) = _function_module(terraform)["resource"]["google_cloudfunctions2_function"].values()
    return function


def _dynamic(block: dict, name: str) -> dict:
    (dynamic,) = [d[name] for d in block.get("dynamic", []) if name in d]
    return dynamic


def _text(value, terraform: dict) -> str:
    """An argument as Terraform source text, with the locals it names written out (recursively)."""
    text = str(value)
    return text + "".join(_text(terraform["locals"][name], terraform) for name in re.findall(r"\blocal\.(\w+)", text))


def _env_names(value, terraform: dict) -> set[str]:
    """The ASKFLOW_* environment variables an argument (a map, a local or a merge of them) sets."""
    return set(re.findall(r"\bASKFLOW_[A-Z0-9_]+\b", _text(value, terraform)))


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
    functions = _functions(terraform)
    for name, call in functions.items():
        assert "local.askflow_env" in str(call["environment_variables"]), f"{name} lacks the shared settings"
    function = _deployed_function(terraform)
    assert function["service_config"][0]["environment_variables"] == "${var.environment_variables}"
    assert _dynamic(function["service_config"][0], "secret_environment_variables")["for_each"] == "${var.secret_env}"
    variables = set(env)
    for call in functions.values():
        variables |= _env_names(call["environment_variables"], terraform)
        variables |= _env_names(call.get("secret_env"), terraform)
    assert {"ASKFLOW_MCP_ALLOWED_HOSTS", "ASKFLOW_SLACK_SIGNING_SECRET", "ASKFLOW_OPENAI_API_KEY"} <= variables
    for variable in variables:
        assert variable.removeprefix("ASKFLOW_").lower() in fields, f"{variable} is not a setting"
    for name in NAMED_SETTINGS[1:]:
        default = terraform["variable"].get(name, {}).get("default")
        if default is not None and name not in ("embedding_model",):
            assert default == getattr(Settings(), name), f"variable {name} default drifted from the settings"


def test_the_requeue_sweep_is_scheduled_privately(terraform):
    job = next(iter(terraform["resource"]["google_cloud_scheduler_job"].values()))
    target = job["http_target"][0]
    assert target["uri"] == "${module.requeue_unfinished.uri}"
    scheduler = re.search(r"google_service_account\.(\w+)\.", target["oidc_token"][0]["service_account_email"])[1]
    requeue = _functions(terraform)["requeue_unfinished"]
    assert list(requeue["invokers"].values()) == [f"serviceAccount:${{google_service_account.{scheduler}.email}}"]
    assert requeue.get("public") is not True and "event_trigger" not in requeue  # no one else invokes it
    # the module grants exactly those members the invoker role on the function it deploys
    run_invokers = _function_module(terraform)["resource"]["google_cloud_run_service_iam_member"]
    assert run_invokers["invokers"]["member"] == "${each.value}"
    assert run_invokers["invokers"]["for_each"] == "${var.invokers}"
    assert run_invokers["invokers"]["service"] == "${google_cloudfunctions2_function.function.name}"
    assert run_invokers["public"]["count"] == "${var.public ? 1 : 0}"


def test_the_admin_function_has_no_public_invoker_and_admits_only_its_members(terraform):
    """Issue 24: the admin pages are a function of their own behind IAM (or IAP), not behind the public page's
    gate; the public function keeps allUsers."""
    functions = _functions(terraform)
    api, admin = functions["api"], functions["admin"]
    assert api["public"] is True and admin["entry_point"] == "admin" and _entry_points()["admin"] == "http"
    assert admin.get("public") is None and "event_trigger" not in admin
    assert _function_module(terraform)["variable"]["public"]["default"] is False  # so no allUsers binding
    # its invokers: the members of admin_invokers (behind IAP: IAP's service agent alone)
    invokers = _text(admin["invokers"], terraform)
    assert "for member in var.admin_invokers : member => member" in invokers and "gcp-sa-iap" in invokers
    assert "allUsers" not in invokers and "allAuthenticatedUsers" not in invokers
    (validation,) = terraform["variable"]["admin_invokers"]["validation"]
    assert "var.admin_invokers" in validation["condition"]
    member = re.compile(re.search(r'regex\("([^"]+)"', validation["condition"])[1])
    for allowed in ("user:ana@example.com", "group:askflow-admins@example.com", "domain:example.com",
                    "serviceAccount:ops@p.iam.gserviceaccount.com"):
        assert member.match(allowed), allowed
    for refused in ("allUsers", "allAuthenticatedUsers", "ana@example.com", "user:"):
        assert not member.match(refused), refused
    # nothing in the root configuration grants anyone at all an invoker role
    for kind, named in terraform["resource"].items():
        for name, resource in named.items():
            assert "allUsers" not in str(resource) and "allAuthenticatedUsers" not in str(resource), (kind, name)


def test_behind_iap_the_admin_function_takes_only_the_load_balancers_traffic(terraform):
    admin = _functions(terraform)["admin"]
    assert terraform["variable"]["admin_iap"]["default"] is False
    assert admin["ingress_settings"] == '${var.admin_iap ? "ALLOW_INTERNAL_AND_GCLB" : "ALLOW_ALL"}'
    resources = terraform["resource"]
    neg = resources["google_compute_region_network_endpoint_group"]["admin"]
    assert neg["network_endpoint_type"] == "SERVERLESS"
    assert _text(neg["cloud_run"][0]["service"], terraform).endswith(_text(admin["name"], terraform))
    backend = resources["google_compute_backend_service"]["admin"]
    assert backend["iap"][0]["enabled"] is True and backend["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    assert backend["backend"][0]["group"] == "${google_compute_region_network_endpoint_group.admin[0].id}"
    users = resources["google_iap_web_backend_service_iam_member"]["admin_users"]
    assert users["role"] == "roles/iap.httpsResourceAccessor" and "toset(var.admin_invokers)" in users["for_each"]
    for kind in ("google_compute_region_network_endpoint_group", "google_compute_backend_service",
                 "google_compute_url_map", "google_compute_target_https_proxy",
                 "google_compute_global_forwarding_rule"):
        assert resources[kind]["admin"]["count"] == "${var.admin_iap ? 1 : 0}", kind  # nothing without admin_iap
    assert resources["google_compute_target_https_proxy"]["admin"]["ssl_policy"]
    # the function verifies IAP's header against this backend service, and maps admins by the IAP variables
    assert {"ASKFLOW_IAP_AUDIENCE", "ASKFLOW_IAP_ADMINS", "ASKFLOW_IAP_AUDIENCE_RULES"} <= _env_names(
        admin["environment_variables"], terraform)
    assert "google_compute_backend_service.admin[0].generated_id" in _text(admin["environment_variables"], terraform)
    assert {"compute.googleapis.com", "iap.googleapis.com"} <= set(terraform["locals"]["apis"])


def test_every_secret_setting_has_a_secret_and_back(terraform):
    secret_settings = {
        name for name, field in Settings.model_fields.items()
        if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", (field.annotation,))
    } - {"github_token"}
    declared = set(terraform["variable"]["secrets"]["default"])
    assert secret_settings <= declared
    assert declared - secret_settings <= {"weaviate_url"}  # a URL, not a secret value, but kept out of plain env
    assert set(terraform["resource"]["google_secret_manager_secret"]) == {"secrets"}


def test_each_function_may_read_exactly_the_secrets_it_is_given(terraform):
    module = _function_module(terraform)
    reads = module["resource"]["google_secret_manager_secret_iam_member"]["reads"]
    secrets = _dynamic(_deployed_function(terraform)["service_config"][0], "secret_environment_variables")
    assert reads["for_each"] == secrets["for_each"] == "${var.secret_env}"
    assert reads["member"] == "serviceAccount:${google_service_account.function.email}"
    assert reads["role"] == "roles/secretmanager.secretAccessor"
    reading = {name: call for name, call in _functions(terraform).items() if "secret_env" in call}
    assert reading, "no function reads a secret"
    for name, call in reading.items():
        assert call["secrets"] == "${google_secret_manager_secret.secrets}", f"{name} reads other secrets"


def _may_hold(for_each, key: str, terraform: dict) -> bool:
    """Whether a for_each value (a map, a set, or an expression of locals and variables) can make that key."""
    if isinstance(for_each, (dict, list)):
        return key in for_each
    return re.search(rf"\b{re.escape(key)}\s*=", _text(for_each, terraform)) is not None


def _declared(address: str, terraform: dict) -> bool:
    """Whether the configuration has a resource (instance) address: the resource, in the root or in a call of
    modules/function, with the instance key or index its for_each or count (the call's argument) can make."""
    call_name, kind, name, key, index = ADDRESS.fullmatch(address).groups()
    call = {} if call_name is None else _functions(terraform).get(call_name)
    declaring = terraform if call_name is None else _function_module(terraform)
    resource = declaring["resource"].get(kind, {}).get(name)
    if call is None or resource is None:
        return False
    if index is not None:
        return "count" in resource
    if key is not None:
        argument = re.fullmatch(r"\$\{var\.(\w+)\}", str(resource.get("for_each")))
        return _may_hold(call.get(argument[1]) if call_name and argument else resource.get("for_each"), key, terraform)
    return True


def test_moved_blocks_take_every_renamed_resource_to_an_address_the_configuration_has(terraform):
    """An existing deployment keeps its resources: a moved block whose target is not declared would destroy the
    resource it moves, and one whose source is still declared is an error."""
    moves = [(move["from"].strip("${}"), move["to"].strip("${}")) for move in terraform["moved"]]
    assert moves, "no moved blocks"
    assert len({source for source, _ in moves}) == len(moves), "a resource is moved twice"
    assert len({target for _, target in moves}) == len(moves), "two resources are moved to one address"
    for source, target in moves:
        call_name, kind, name, _, _ = ADDRESS.fullmatch(source).groups()
        assert call_name is None and name not in terraform["resource"].get(kind, {}), f"{source} is still declared"
        assert _declared(target, terraform), f"{source} moves to {target}, which the configuration does not have"


def test_requests_expire_after_the_retention_period(terraform):
    """Firestore's TTL policy deletes a request once its expires_at (written by the app) has passed."""
    fields = terraform["resource"]["google_firestore_field"].values()
    expiring = {(_resolve(f["collection"], terraform), f["field"]) for f in fields if "ttl_config" in f}
    assert (Settings().requests_collection, "expires_at") in expiring
    assert terraform["variable"]["request_retention_days"]["default"] >= 1


def test_composer_reports_lineage_to_dataplex(terraform):
    (composer,) = terraform["resource"]["google_composer_environment"].values()
    software = composer["config"][0]["software_config"][0]
    assert software["cloud_data_lineage_integration"][0]["enabled"] is True
    assert re.match(r"composer-[23]", software["image_version"])  # the integration needs Composer 2.1.2 or later
    assert "datalineage.googleapis.com" in terraform["locals"]["apis"]
    # the provider that sends the events, at the version range the DAGs are written for
    requirements = (ROOT / "dags" / "requirements.txt").read_text()
    required = re.search(r"^apache-airflow-providers-openlineage(\S+)", requirements, re.M)
    assert required and software["pypi_packages"]["apache-airflow-providers-openlineage"] == required[1]


def test_terraform_functions_exist_with_the_right_signature(terraform):
    entry_points = _entry_points()
    subscriptions = terraform["resource"]["google_pubsub_subscription"].values()
    pushed = {
        m[1] for s in subscriptions for m in [re.search(r"module\.(\w+)\.uri", str(s.get("push_config", "")))] if m
    }
    assert pushed, "no subscription pushes to a function"
    function = _deployed_function(terraform)
    assert function["build_config"][0]["entry_point"] == "${var.entry_point}"
    assert _dynamic(function, "event_trigger")["for_each"] == "${var.event_trigger[*]}"
    functions = _functions(terraform)
    assert functions, "no functions in Terraform"
    for name, call in functions.items():
        entry = call["entry_point"]
        assert entry in entry_points, f"Terraform deploys {entry}, which functions/main.py does not define"
        expected = "cloud_event" if name in pushed or "event_trigger" in call else "http"
        assert entry_points[entry] == expected, f"{entry} should be a {expected} function"
    assert {call["entry_point"] for call in functions.values()} == set(entry_points)


def test_cloudbuild_deploys_the_same_functions(terraform):
    build = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())
    deployed = {
        arg.split("=", 1)[1] for step in build["steps"] for arg in step.get("args", [])
        if isinstance(arg, str) and arg.startswith("--entry-point=")
    }
    entry_points = _entry_points()
    assert deployed == set(entry_points)
    terraform_entries = {call["entry_point"] for call in _functions(terraform).values()}
    assert deployed == terraform_entries
    for step in build["steps"]:
        args = step.get("args", [])
        if {"--entry-point=answer_worker", "--entry-point=requeue_unfinished", "--entry-point=admin"} & set(args):
            assert "--no-allow-unauthenticated" in args and "--allow-unauthenticated" not in args
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
