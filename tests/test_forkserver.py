"""The fork server the CLI tests run ``python -m`` from (tests/support/forkserver.py) gives what a fresh interpreter
gives: the same output, errors and exit code for the same module, arguments, environment and folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import forkserver

PROBE = '''
import atexit, json, os, signal, sys, threading, time

atexit.register(lambda: print("atexit ran", file=sys.stderr, flush=True))
threading.Thread(target=lambda: (time.sleep(0.2), print("a thread finished first"))).start()
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "path0": sys.path[0], "probe": os.environ.get("PROBE"),
                  "home": os.environ.get("HOME"), "stdin": sys.stdin.read(), "main": __name__}))
what = sys.argv[1]
if what == "code":
    sys.exit(int(sys.argv[2]))
if what == "message":
    sys.exit("a message instead of a code")
if what == "raise":
    raise ValueError("an uncaught error")
if what == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.fixture
def probe(tmp_path):
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "forkserver_probe.py").write_text(PROBE)
    work = tmp_path / "work"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "HOME"}  # one variable less than ours
    return {"env": env | {"PYTHONPATH": str(folder), "PROBE": "the run's own"}, "cwd": work}


def _both(probe, *args: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    fresh = subprocess.run([sys.executable, "-m", "forkserver_probe", *args], env=probe["env"], cwd=probe["cwd"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    here = os.getcwd()
    os.chdir(probe["cwd"])  # a run starts in the caller's working folder
    try:
        forked = forkserver.run_module("forkserver_probe", *args, env=probe["env"], timeout=300)
    finally:
        os.chdir(here)
    return fresh, forked


@pytest.mark.parametrize("args", [("code", "0"), ("code", "3"), ("message",), ("kill",), ("done",)])
def test_a_forked_run_prints_and_exits_as_a_fresh_interpreter(probe, args):
    fresh, forked = _both(probe, *args)
    assert forked.returncode == fresh.returncode
    assert forked.stdout == fresh.stdout and forked.stderr == fresh.stderr
    if args[0] != "kill":  # a killed process runs no handlers: nothing to compare but the signal
        assert '"probe": "the run\'s own"' in forked.stdout and '"home": null' in forked.stdout
        assert "a thread finished first" in forked.stdout and forked.stderr.endswith("atexit ran\n")
    else:
        assert forked.returncode == -signal.SIGKILL


def test_an_uncaught_error_ends_the_run_with_its_traceback_and_code_1(probe):
    fresh, forked = _both(probe, "raise")
    assert forked.returncode == fresh.returncode == 1
    assert forked.stdout == fresh.stdout
    assert forked.stderr.startswith("Traceback") and forked.stderr.splitlines()[-2:] == fresh.stderr.splitlines()[-2:]


def test_a_run_past_its_timeout_is_killed_and_the_server_serves_the_next():
    def help_text() -> subprocess.CompletedProcess:
        return forkserver.run_module("json.tool", "--help", env=dict(os.environ), timeout=300)

    assert help_text().returncode == 0  # the server is up (its imports are done)
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run_module("http.server", "--bind", "127.0.0.1", "0", env=dict(os.environ), timeout=2)
    assert time.monotonic() - started < 30
    again = help_text()
    assert again.returncode == 0 and "usage:" in again.stdout
