"""Run a DAG file with ``dag.test()`` (Airflow 3, SQLite metadata DB) as the tests do, in an interpreter that stays.

Airflow reads its configuration at import, so a run needs an interpreter started with the run's ``AIRFLOW*``
variables; starting one (Airflow, its in-process execution API, the tasks' libraries) takes longer than most runs.
Each Airflow configuration therefore gets one interpreter (``python -m tests.support.dag_runner``) that runs what
it is sent one run at a time: each run under exactly the environment it is given (askflow's settings are read anew
by every task), with its DAG file imported anew, and with its output in a log file of its own under
``$AIRFLOW_HOME/dag-runs``. Retries keep their number but not their delay: every task's ``retry_delay`` is zero,
so a run that fails, or recovers, after retries does not wait out the production backoff.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import itertools
import json
import os
import selectors
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 600


class DagRunner:
    """One interpreter that runs DAG files with ``dag.test()`` on request, one run at a time."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log_dir = log_dir
        self._numbers = itertools.count(1)
        with (log_dir / "runner.log").open("ab") as runner_log:  # what the interpreter prints outside any run
            self._process = subprocess.Popen([sys.executable, "-m", "tests.support.dag_runner"], env=env, cwd=ROOT,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=runner_log,
                                             text=True)

    def alive(self) -> bool:
        return self._process.poll() is None

    def run(self, dag_file: Path, conf: dict, env: dict[str, str], *, timeout_s: float = RUN_TIMEOUT_S) -> str:
        """The final state of ``dag_file`` run with ``conf`` under ``env``; fails the test, with the end of the run's
        output, if the run raised, the interpreter died or ``timeout_s`` passed."""
        log = self._log_dir / f"{next(self._numbers):03d}-{dag_file.stem}.log"
        self._process.stdin.write(json.dumps({"dag_file": str(dag_file), "conf": conf, "env": env,
                                              "log": str(log)}) + "\n")
        self._process.stdin.flush()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._process.stdout, selectors.EVENT_READ)
                answered = selector.select(timeout_s)
            line = self._process.stdout.readline() if answered else ""
        except BaseException:  # the test interrupted (a time-out, Ctrl-C): this run's answer must not reach the next
            self.kill()
            raise
        if not line:
            self.kill()
        reply = json.loads(line) if line else {"error": "the runner died" if answered else f"no end in {timeout_s} s"}
        output = log.read_text(errors="replace")[-6000:] if log.exists() else ""
        assert "state" in reply, f"{dag_file.name}: {reply['error']}\n{output}"
        return reply["state"]

    def stop(self) -> None:
        if self.alive():
            self._process.stdin.close()  # the interpreter's end of input: it leaves its loop and exits
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()


_runners: dict[tuple[tuple[str, str], ...], DagRunner] = {}


def run_dag(dag_file: str, conf: dict, env: dict[str, str]) -> str:
    """The final state of ``dags/<dag_file>`` run with ``conf`` under ``env`` (``env["AIRFLOW_HOME"]`` is the
    Airflow home), in the interpreter of ``env``'s Airflow configuration."""
    configuration = tuple(sorted((name, value) for name, value in env.items() if name.startswith("AIRFLOW")))
    runner = _runners.get(configuration)
    if runner is None or not runner.alive():
        runner = _runners[configuration] = DagRunner(env, Path(env["AIRFLOW_HOME"]) / "dag-runs")
    return runner.run(ROOT / "dags" / dag_file, conf, env)


def stop_runners() -> None:
    """Stop every interpreter ``run_dag`` started."""
    for runner in _runners.values():
        runner.stop()
    _runners.clear()


def dag_env(airflow_env: dict[str, str], pg_url: str, wire, collection: str, **overrides) -> dict[str, str]:
    """The Airflow environment plus askflow settings: pgvector at ``pg_url``, embeddings from the loopback server."""
    from askflow.config import Settings
    from askflow.dev.local_stack import settings_env

    settings = Settings(database_url=pg_url, collection=collection, embedding_provider="openai",
                        embedding_model="text-embedding-3-small", openai_base_url=wire.base_url,
                        openai_api_key="test-key", **overrides)
    return {**airflow_env, **settings_env(settings)}


@contextlib.contextmanager
def _output_to(log) -> Iterator[None]:
    """File descriptors 1 and 2 (what Airflow, the tasks and their libraries print) go to ``log`` in the block."""
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _test(dag_file: Path, conf: dict, number: int) -> str:
    """Import ``dag_file`` anew, take every task's retry delay away, and ``dag.test()`` it."""
    spec = importlib.util.spec_from_file_location(f"dag_under_test_{number}", dag_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for task in module.dag.tasks:
        task.retry_delay = dt.timedelta(0)
    return str(module.dag.test(run_conf=conf).state)


def serve() -> None:
    """The interpreter's loop: a run per line of standard input, its outcome (``{"state"}`` or ``{"error"}``) a line
    of the original standard output."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what is printed outside a run joins stderr: only replies reach the caller
    sys.path.insert(0, str(ROOT / "dags"))  # as Airflow puts its DAG folder on the path
    for number, line in enumerate(sys.stdin, 1):
        request = json.loads(line)
        with open(request["log"], "ab") as log, _output_to(log), mock.patch.dict(os.environ, request["env"],
                                                                                 clear=True):
            try:
                reply = {"state": _test(Path(request["dag_file"]), request["conf"], number)}
            except Exception:
                traceback.print_exc()
                reply = {"error": traceback.format_exc(limit=-8)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
