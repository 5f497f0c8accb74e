"""Named kill points: where a test may have this process die (SIGKILL, as a preempted instance or an OOM-killed
worker would), to check that what a restart finds is consistent.

``ASKFLOW_KILL_AT`` names the point (``worker.after_claim``, ...); unset, a kill point is a dictionary look-up and
nothing else. Only tests set it, on a subprocess they start.
"""

from __future__ import annotations

import os
import signal
import sys

KILL_AT = "ASKFLOW_KILL_AT"


def kill_point(name: str) -> None:
    """Die here, at once and without cleaning up, if ``ASKFLOW_KILL_AT`` names this point."""
    if os.environ.get(KILL_AT) == name:
        sys.stderr.write(f"askflow: killed at {name}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
