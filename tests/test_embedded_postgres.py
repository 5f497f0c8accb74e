"""The embedded PostgreSQL server outlives no one: a process killed outright (its PID left behind in the wheel's
list of users) does not keep the next user from stopping the server when it is the last to leave."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ATTACH = "import sys, time; from pathlib import Path; " \
         "from askflow.adapters.embedded_postgres import embedded_postgres_url; " \
         "print(embedded_postgres_url(Path(sys.argv[1])), flush=True); time.sleep(float(sys.argv[2]))"


def _servers(data_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"postgres -D {data_dir / 'pgdata'}"], capture_output=True, text=True)
    return found.stdout.split()


def test_a_user_killed_outright_does_not_keep_the_server_running_after_the_last_one_leaves(tmp_path):
    crashed = subprocess.Popen([sys.executable, "-c", ATTACH, str(tmp_path), "600"], stdout=subprocess.PIPE,
                               text=True)
    assert crashed.stdout.readline().startswith("postgresql://")
    assert _servers(tmp_path)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(timeout=10)
    assert _servers(tmp_path)  # nobody stopped it: its last user died without a word

    last = subprocess.run([sys.executable, "-c", ATTACH, str(tmp_path), "0"], capture_output=True, text=True,
                          timeout=120)
    assert last.returncode == 0, last.stderr[-2000:]
    deadline = time.monotonic() + 30
    while _servers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _servers(tmp_path)
