"""``askflow demo`` as a newcomer runs it: the web page's URL first, a question answered, a 👍 graded by the
evaluation DAG and listed on the homepage, and SIGTERM stopping every process the demo started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.test_ask_path import call


def _as_the_page(page: str) -> dict[str, str]:
    """The header the web page's own calls carry: its session cookie (the demo's API needs its admin key)."""
    with urllib.request.urlopen(page, timeout=30) as response:
        return {"Cookie": response.headers["Set-Cookie"].split(";", 1)[0]}


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_demo_runs_the_whole_loop_and_stops_on_sigterm(tmp_path):
    admin = {"X-API-Key": "demo-test-admin-key-0123456789"}
    env = {**os.environ, "ASKFLOW_DATA_DIR": str(tmp_path / "data"), "ASKFLOW_PROJECT_ID": "askflow-demo-test",
           "PYTHONUNBUFFERED": "1", "ASKFLOW_API_KEY": admin["X-API-Key"]}
    for name in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "ASKFLOW_DATABASE_URL", "ASKFLOW_COLLECTION"):
        env.pop(name, None)  # the demo starts its own
    demo = subprocess.Popen([sys.executable, "-m", "askflow.entrypoints.cli", "demo", "--question",
                             "How do I run the tests?"], env=env, stdout=subprocess.PIPE,
                            stderr=(tmp_path / "demo.err").open("wb"), text=True)
    try:
        lines = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "".join(lines) + (tmp_path / "demo.err").read_text()[-3000:]
            lines.append(line)
            if "Open the web page:" in line:
                break
        page = line.split("Open the web page:")[1].strip()
        assert not any("Open the web page" in earlier for earlier in lines[:-1])
        session = _as_the_page(page)
        assert call("GET", page.rstrip("/") + "/requests?good=true")[0] == 401  # the API needs a key ...
        assert call("GET", page.rstrip("/") + "/requests?good=true", headers=session)[0] == 200  # ... or the page's

        status, queued = call("POST", f"{page}requests", json.dumps({"question": "How do I run the tests?"}).encode(),
                              headers=session)
        assert status == 202, queued
        request_id, asker = queued["request_id"], session | {"X-Asker-Token": queued["asker_token"]}
        deadline = time.monotonic() + 300
        while call("GET", f"{page}requests/{request_id}", headers=asker)[1]["status"] not in ("complete", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert call("GET", f"{page}requests/{request_id}", headers=asker)[1]["status"] == "complete"
        assert call("POST", f"{page}requests/{request_id}/feedback", json.dumps({"positive": True}).encode(),
                    headers=asker)[0] == 200
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # trigger → Pub/Sub → the evaluation DAG → the review queue (no judge)
            queue = urllib.request.urlopen(urllib.request.Request(f"{page}admin/review", headers=admin), timeout=30)
            if f"/answers/{request_id}" in queue.read().decode():
                break
            time.sleep(5)
        else:
            raise AssertionError("the rated answer never reached the review queue")
        listed = [item["request_id"] for item in call("GET", page.rstrip("/") + "/requests?good=true",
                                                      headers=session)[1]["items"]]
        assert request_id not in listed  # a 👍 alone verifies nothing
        assert call("POST", f"{page}admin/review/{request_id}", json.dumps({"approved": True}).encode(),
                    headers=admin)[0] == 200
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # approved → graded again → verified → the homepage feed
            listed = [item["request_id"] for item in call("GET", page.rstrip("/") + "/requests?good=true",
                                                          headers=session)[1]["items"]]
            if request_id in listed:
                break
            time.sleep(5)
        assert request_id in listed, (tmp_path / "demo.err").read_text()[-3000:]

        started = _descendants(demo.pid)
        assert len(started) >= 7  # two emulators, five functions (and their children)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=90) == 0
        time.sleep(2)
        assert not [pid for pid in started if _alive(pid)]
    finally:
        if demo.poll() is None:  # an assertion failed: still stop what the demo started
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=90)
            except subprocess.TimeoutExpired:
                demo.kill()
        print(json.dumps({"stderr_tail": (tmp_path / "demo.err").read_text()[-1500:]}))
