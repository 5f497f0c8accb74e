"""``python -m MODULE ARGS`` as the tests run it (the ``askflow`` CLI): a process of its own, with its own
environment, working folder, arguments, output and exit code, forked from an interpreter that imported the heavy
libraries once.

A CLI run that embeds with the local model spends most of its time importing sentence-transformers (torch,
transformers, scikit-learn, SciPy): about 14 s of CPU, every run. The server (``python -m tests.support.forkserver``)
imports them once, forks a child per run, and the child becomes the run: its environment is the run's, standard
input is empty, standard output and error go to files, and ``runpy`` runs the module as ``__main__``; the child
then ends as an interpreter does (``atexit`` handlers, buffers flushed, the exit code). What the server imports
reads the environment it was started with; the Hugging Face variables are set first, as ``LocalEmbeddings`` sets
them before its first import.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRELOADED = ("sentence_transformers", "askflow.bootstrap", "askflow.adapters.local_embeddings",
             "askflow.adapters.pgvector_store", "google.cloud.firestore")
LOCAL_MODEL_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


class ForkServer:
    """The server's other end: one run at a time (a lock orders callers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outputs = tempfile.TemporaryDirectory(prefix="forkserver-")
        self._log = Path(self._outputs.name, "server.log")  # what the server itself prints (its imports' warnings)
        self._process: subprocess.Popen | None = None

    def run(self, module: str, *args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        """What ``subprocess.run([python, "-m", module, *args], env=env, capture_output=True, text=True,
        timeout=timeout)`` gives; ``subprocess.TimeoutExpired`` (the run killed) past ``timeout``."""
        command = [sys.executable, "-m", module, *args]
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                with self._log.open("ab") as log:
                    self._process = subprocess.Popen([sys.executable, "-m", "tests.support.forkserver"], cwd=ROOT,
                                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                                     text=True)
            out, err = Path(self._outputs.name, "stdout"), Path(self._outputs.name, "stderr")
            self._send({"module": module, "args": list(args), "env": env, "cwd": os.getcwd(), "stdout": str(out),
                        "stderr": str(err)})
            pid = None
            try:
                pid = self._reply(timeout=timeout)["pid"]  # after the server's imports, on its first run
                returncode = self._reply(timeout=timeout)["returncode"]
            except TimeoutError:
                if pid is None:
                    self._kill()
                    raise subprocess.TimeoutExpired(command, timeout) from None
                os.kill(pid, signal.SIGKILL)  # the run, not the server: it answers the run's end, and serves on
                self._reply(timeout=60)
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text()) from None
            except BaseException:  # the test interrupted (a time-out, Ctrl-C): this run's answers must not reach
                if pid is not None:  # the next run
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self._kill()
                raise
            return subprocess.CompletedProcess(command, returncode, out.read_text(), err.read_text())

    def _kill(self) -> None:
        """The server killed (a later run starts another)."""
        self._process.kill()
        self._process.wait()
        self._process = None

    def stop(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.stdin.close()  # the end of its input: the server leaves its loop
                self._process.wait(timeout=30)
            self._process = None
        self._outputs.cleanup()

    def _send(self, request: dict) -> None:
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()

    def _reply(self, *, timeout: float) -> dict:
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError
        line = self._process.stdout.readline()
        assert line, f"the fork server died:\n{self._log.read_text(errors='replace')[-3000:]}"
        return json.loads(line)


_server = ForkServer()


def run_module(module: str, *args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``python -m module *args`` under ``env``, from the session's fork server (started on first use)."""
    return _server.run(module, *args, env=env, timeout=timeout)


def stop() -> None:
    """Stop the session's fork server (a later ``run_module`` starts another)."""
    _server.stop()


def _become(request: dict) -> None:
    """In the forked child: take the run's environment, folder, input and output, run its module as ``__main__``,
    and end as ``python -m`` would, with its exit code."""
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = request["cwd"]  # python -m puts its working folder first, then PYTHONPATH's folders
    sys.path[1:1] = [folder for folder in request["env"].get("PYTHONPATH", "").split(os.pathsep) if folder]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = _exit_code(exit)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # the end of an interpreter, less the teardown of every module (which would write to, and so copy, every page
    # the child shares with the server): other threads joined, atexit handlers, output flushed
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)


def _exit_code(exit: SystemExit) -> int:
    """The exit code of an interpreter ended by ``exit``, printing its message as the interpreter does."""
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)
    return 1


def serve() -> None:
    """The server's loop: a run per line of standard input; its child's pid, then its exit code, each a line of
    the original standard output."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the server's imports print joins stderr: only replies reach the caller
    for name, value in LOCAL_MODEL_ENV.items():
        os.environ.setdefault(name, value)
    for module in PRELOADED:
        importlib.import_module(module)
    gc.freeze()  # what is imported stays out of the children's collections: their pages stay shared
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush(), sys.stderr.flush()  # nothing buffered here is written again by the child
        pid = os.fork()
        if pid == 0:
            replies.close()
            _become(request)
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
