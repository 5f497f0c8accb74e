"""Airflow on this machine as Composer runs it: its metadata database migrated, then the API server (the UI, the REST
API and the execution API the tasks report to), the scheduler (LocalExecutor: each task a process of its own) and
the DAG processor, each a process on free ports. ``askflow demo --airflow`` and the end-to-end test start it here,
the one place that knows how; never deployed.

The components find each other through the environment: the execution API's URL is the API server's port (its
default, ``localhost:8080``, is what left every task of the demo with "Connection refused"), the JWT secret the
scheduler signs the tasks' tokens with is the API server's, and the scheduler's health check and log server take
free ports too, so two of these (a demo and a test) run side by side. The simple auth manager's user is ``admin``;
the API server writes its password to ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from askflow.dev.local_stack import REPO_ROOT, Service, free_port, wait_for_http

DAGS = REPO_ROOT / "dags"
USER = "admin"


@dataclass
class LocalAirflow:
    """The running components; ``url`` is the API server's (the UI; ``api/v2`` the REST API)."""

    url: str
    home: Path
    services: list[Service]

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def token(self) -> str:
        """A REST API token for ``admin`` (the simple auth manager's ``POST /auth/token``)."""
        password = json.loads(self.password_file.read_text())[USER]
        request = urllib.request.Request(f"{self.url}auth/token", method="POST",
                                         data=json.dumps({"username": USER, "password": password}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["access_token"]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def airflow_env(base: dict[str, str], home: Path, **overrides: str) -> dict[str, str]:
    """``base`` (the askflow settings and emulators the tasks need) with an Airflow home, this project's DAG folder,
    no examples and the Google connection anonymous (the emulators need no credentials)."""
    return {
        **base,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps({"conn_type": "google_cloud_platform",
                                                        "extra": {"is_anonymous": True}}),
        **overrides,
    }


def start_airflow(env: dict[str, str], log_dir: Path, *, timeout_s: float = 300) -> LocalAirflow:
    """Migrate ``env``'s Airflow home and start the API server, the scheduler and the DAG processor; each logs to
    ``log_dir``. Stop them with ``stop()`` (a failed start stops what it started)."""
    port, health = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/"
    # the components run as `airflow ...` processes of this interpreter: its bin folder goes on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env = env | {
        "PATH": path,
        "AIRFLOW__CORE__EXECUTOR": env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": env.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=timeout_s)
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {migrate.stderr[-2000:]}")
    airflow = LocalAirflow(url=url, home=home, services=[])
    try:  # all three at once (each takes a while to import Airflow), then each waited for
        for name in ("api-server", "scheduler", "dag-processor"):
            airflow.services.append(_spawn(f"airflow-{name}", [sys.executable, "-m", "airflow", name],
                                           log_dir=log_dir, env=env))
        for service, ready in zip(airflow.services, (f"{url}api/v2/monitor/health",
                                                     f"http://127.0.0.1:{health}/health"), strict=False):
            try:
                wait_for_http(ready, timeout_s=timeout_s, process=service.process)
            except (RuntimeError, TimeoutError) as error:
                raise RuntimeError(f"{service.name} did not start ({error}); see {service.log_path}:\n"
                                   f"{service.log_path.read_text(errors='replace')[-2000:]}") from None
        if airflow.services[2].process.poll() is not None:
            raise RuntimeError(f"the DAG processor exited; see {airflow.services[2].log_path}")
    except BaseException:
        airflow.stop()
        raise
    return airflow


def _spawn(name: str, command: list[str], *, log_dir: Path, env: dict[str, str]) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   cwd=REPO_ROOT)
    return Service(name, "", process, log_path)
