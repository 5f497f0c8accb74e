"""The web page: static files served by the API function itself, so the page and the API share one origin."""

from __future__ import annotations

from importlib import resources

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def static_response(name: str) -> tuple[bytes, int, dict[str, str]]:
    """A file of the page (``index.html``, or an asset under ``/assets/``: Flask, under functions-framework, keeps
    ``/static`` for itself); a 404 for any name that is not one of them."""
    files = resources.files("askflow.web") / "static"
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if "/" in name or suffix not in CONTENT_TYPES or not (files / name).is_file():
        return b"not found", 404, {"Content-Type": "text/plain; charset=utf-8"}
    headers = {"Content-Type": CONTENT_TYPES[suffix], "Cache-Control": "public, max-age=300", **SECURITY_HEADERS}
    return (files / name).read_bytes(), 200, headers
