"""The local stack on the official emulators: what ``askflow demo`` starts and what the tests start.

Firestore and Pub/Sub emulators (gcloud), the embedded PostgreSQL + pgvector server, and the Cloud Functions under
functions-framework, with the questions topic pushing to the answer worker as Eventarc does in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from askflow.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_SOURCE = REPO_ROOT / "functions" / "main.py"
# the public and the admin function on one origin (deployed, two functions): the admin pages beside the web page
LOCAL_API_SOURCE = Path(__file__).resolve().parent / "local_functions.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, *, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        """Stop the whole process group: a wrapper (gcloud, airflow standalone) may have exited and left its
        children running."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _start(name: str, command: list[str], *, url: str, log_dir: Path, env: dict[str, str] | None = None,
           timeout_s: float = 90) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO_ROOT
    )
    service = Service(name, url, process, log_path)
    try:
        wait_for_http(url, timeout_s=timeout_s, process=process)
    except Exception:
        service.stop()
        raise RuntimeError(f"{name} did not start; see {log_path}:\n{log_path.read_text()[-2000:]}") from None
    return service


def firestore_emulator_binary() -> Path:
    sdk_root = subprocess.run(
        ["gcloud", "info", "--format=value(installation.sdk_root)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(sdk_root) / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"


def start_firestore_emulator(log_dir: Path, *, functions_port: int) -> Service:
    """The emulator binary itself (``gcloud emulators firestore start`` does not pass ``--functions_emulator``):
    it posts Eventarc-format CloudEvents for registered triggers to the function on ``functions_port``."""
    port = free_port()
    return _start(
        "firestore-emulator",
        [str(firestore_emulator_binary()), "--host=127.0.0.1", f"--port={port}",
         f"--functions_emulator=127.0.0.1:{functions_port}"],
        url=f"http://127.0.0.1:{port}",
        log_dir=log_dir,
    )


def register_firestore_trigger(emulator_url: str, settings: Settings, trigger_id: str) -> None:
    """Deliver writes of ``{requests_collection}/{id}`` as ``google.cloud.firestore.document.v1.written``."""
    body = {
        "eventType": "google.cloud.firestore.document.v1.written",
        "database": "(default)",
        "namespace": "(default)",
        "document": {"value": f"{settings.requests_collection}/{{id}}", "matchType": "PATH_PATTERN"},
    }
    request = urllib.request.Request(
        f"{emulator_url}/emulator/v1/projects/{settings.project_id}/eventarcTrigger?eventarcTriggerId={trigger_id}",
        data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def start_pubsub_emulator(log_dir: Path, project_id: str, *, host: str | None = None) -> Service:
    """:param host: ``HOST:PORT`` to listen on (a restart reuses its predecessor's); default a free port."""
    host = host or f"127.0.0.1:{free_port()}"
    return _start(
        "pubsub-emulator",
        ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={project_id}",
         "--quiet"],
        url=f"http://{host}",
        log_dir=log_dir,
    )


def start_function(target: str, *, signature: str, env: dict[str, str], log_dir: Path,
                   port: int | None = None, source: Path = FUNCTIONS_SOURCE) -> Service:
    port = port or free_port()
    # gunicorn's threads (functions-framework: 4 per CPU): a thread reads a request's body, so a few slow clients
    # could hold them all; in production Cloud Run's front end buffers requests and scales instances instead
    env = {"THREADS": "32", **env} if signature == "http" else env
    return _start(
        f"function-{target}",
        [sys.executable, "-m", "functions_framework", f"--target={target}", f"--source={source}",
         f"--signature-type={signature}", "--host=127.0.0.1", f"--port={port}"],
        url=f"http://127.0.0.1:{port}/",
        log_dir=log_dir,
        env=env,
        timeout_s=60,
    )


def ensure_topic(topic: str, settings: Settings) -> str:
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    path = publisher.topic_path(settings.project_id, topic)
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=path)
    return path


def ensure_pull_subscription(settings: Settings, *, topic: str, subscription: str, ack_deadline_s: int = 600) -> None:
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    topic_path = ensure_topic(topic, settings)
    subscriber = pubsub_v1.SubscriberClient()
    with contextlib.suppress(AlreadyExists):
        subscriber.create_subscription(
            request={"name": subscriber.subscription_path(settings.project_id, subscription), "topic": topic_path,
                     "ack_deadline_seconds": ack_deadline_s}
        )
    subscriber.close()


def ensure_push_subscription(settings: Settings, *, push_endpoint: str, ack_deadline_s: int = 60) -> None:
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    topic = ensure_topic(settings.questions_topic, settings)
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(settings.project_id, settings.questions_subscription)
    with contextlib.suppress(AlreadyExists):
        subscriber.create_subscription(
            request={
                "name": subscription,
                "topic": topic,
                "push_config": {"push_endpoint": push_endpoint},
                "ack_deadline_seconds": ack_deadline_s,
            }
        )
    subscriber.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in another process."""
    env = {}
    for name, value in settings.model_dump().items():
        raw = getattr(settings, name)
        if value is None:
            continue
        if hasattr(raw, "get_secret_value"):
            value = raw.get_secret_value()
        env[f"ASKFLOW_{name.upper()}"] = json.dumps(value, default=_revealed) if isinstance(value, (list, dict)) \
            else str(value)
    return env


def _revealed(value):
    """A secret nested in a setting (an ``ASKFLOW_API_KEYS`` key) as the other process must read it."""
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class LocalStack:
    """Emulators + embedded Postgres + functions. ``env`` is what a process needs to talk to this stack."""

    settings: Settings
    log_dir: Path
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    trigger_port: int = field(default_factory=free_port)

    def start_emulators(self) -> None:
        firestore = start_firestore_emulator(self.log_dir, functions_port=self.trigger_port)
        self.services.append(firestore)
        pubsub = start_pubsub_emulator(self.log_dir, self.settings.project_id)
        self.services.append(pubsub)
        self.env.update(
            {
                "FIRESTORE_EMULATOR_HOST": firestore.url.removeprefix("http://"),
                "PUBSUB_EMULATOR_HOST": pubsub.url.removeprefix("http://"),
                "GOOGLE_CLOUD_PROJECT": self.settings.project_id,
            }
        )
        os.environ.update(self.env)

    def start_functions(self, settings: Settings | None = None) -> tuple[Service, Service]:
        """The ask API (with the admin pages on its origin: ``local_functions``) and the answer worker, configured
        by ``settings`` (default: the stack's own)."""
        settings = settings or self.settings
        env = {**os.environ, **self.env, **settings_env(settings)}
        worker = start_function("answer_worker", signature="cloudevent", env=env, log_dir=self.log_dir)
        self.services.append(worker)
        api = start_function("api", signature="http", env=env, log_dir=self.log_dir, source=LOCAL_API_SOURCE)
        self.services.append(api)
        ensure_push_subscription(settings, push_endpoint=worker.url)
        return api, worker

    def start_slack(self, settings: Settings | None = None) -> Service:
        """The Slack webhook function (Events API and interactivity)."""
        env = {**os.environ, **self.env, **settings_env(settings or self.settings)}
        function = start_function("slack_events", signature="http", env=env, log_dir=self.log_dir)
        self.services.append(function)
        return function

    def start_mcp(self, settings: Settings | None = None) -> Service:
        """The MCP server (an async HTTP function: functions-framework serves it with uvicorn)."""
        env = {**os.environ, **self.env, **settings_env(settings or self.settings)}
        function = start_function("mcp", signature="http", env=env, log_dir=self.log_dir)
        self.services.append(function)
        return function

    def start_trigger(self, settings: Settings | None = None) -> Service:
        """The Firestore-triggered function on the port the emulator posts to, and its trigger registered."""
        settings = settings or self.settings
        env = {**os.environ, **self.env, **settings_env(settings)}
        function = start_function("request_written", signature="cloudevent", env=env, log_dir=self.log_dir,
                                  port=self.trigger_port)
        self.services.append(function)
        register_firestore_trigger(self.url("firestore-emulator"), settings, "request_written")
        ensure_topic(settings.evaluation_topic, settings)
        return function

    def start_requeue(self, settings: Settings | None = None) -> Service:
        """The requeue sweep's function (private in production: Cloud Scheduler posts to it)."""
        env = {**os.environ, **self.env, **settings_env(settings or self.settings)}
        function = start_function("requeue_unfinished", signature="http", env=env, log_dir=self.log_dir)
        self.services.append(function)
        return function

    def url(self, name: str) -> str:
        return next(s.url for s in self.services if s.name == name)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
