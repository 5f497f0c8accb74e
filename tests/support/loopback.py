"""What every loopback server of the tests shares: an HTTP server on a free loopback port, serving from a daemon
thread, with a lock for what it records. A subclass sets its own state, then calls ``super().__init__()``, and
gives ``_handler()``, the ``BaseHTTPRequestHandler`` class that serves it."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LoopbackServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        raise NotImplementedError
