"""The local stack's HTTPS function: the public function (``api``) and the admin function (``admin``) of
functions/main.py on one origin, as ``askflow demo`` and the tests open them (``/`` and ``/admin`` side by side).
Deployed, they are two Cloud Functions, the admin one behind IAM or IAP: this file is never packaged (``dev/``).

functions-framework loads it as it loads functions/main.py (``--source``); main.py's own error handlers are set up
when it is imported here."""

from __future__ import annotations

import sys
from pathlib import Path

import functions_framework

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functions"))

import main  # noqa: E402 - functions/main.py, found through the path above

from askflow.entrypoints import admin_api  # noqa: E402


@functions_framework.http
def api(request):
    """The admin function's paths to it, everything else to the public one."""
    return main.admin(request) if admin_api.serves(request.path) else main.api(request)
