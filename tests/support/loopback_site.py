"""A documentation website served on loopback: robots.txt, a sitemap index over two sitemaps, pages wrapped in
navigation chrome with ETags (a matching If-None-Match gets a 304), a page that is gone (404), one that first answers
429 with Retry-After, a path robots.txt disallows. Every request is recorded; tests change pages between runs."""

from __future__ import annotations

import hashlib
import time
from http.server import BaseHTTPRequestHandler

from tests.support.loopback import LoopbackServer

CHROME = ('<html><head><title>{title} | Acme Docs</title>{canonical}</head><body>'
          '<header><nav><a href="/">Home</a> | <a href="/docs/">Docs</a> | Pricing</nav></header>'
          '<aside>On this page: everything</aside><main>{main}</main>'
          '<footer>Copyright Acme Corp, all rights reserved</footer><script>track()</script></body></html>')


def page(title: str, main: str, canonical: str | None = None) -> str:
    link = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    return CHROME.format(title=title, main=main, canonical=link)


class LoopbackSite(LoopbackServer):
    def __init__(self) -> None:
        self.pages: dict[str, str] = {
            "/docs/intro.html": page("Introduction", '<h1 id="introduction">Introduction</h1><p>Acme pipelines '
                                     'move data between warehouses on a schedule you define.</p>'
                                     '<h2 id="install-it">Install it</h2><p>Install the acme package with pip and '
                                     'run the acme init command in your project folder.</p>'),
            "/docs/guide/": page("Guide", '<h1 id="guide">Guide</h1><p>Write a pipeline as a Python function '
                                 'decorated with the pipeline decorator.</p>', canonical="/docs/guide/"),
            "/docs/busy.html": page("Busy", '<h1 id="busy">Retries</h1><p>Acme retries a failed step three times '
                                    'with an exponential backoff between attempts.</p>'),
            "/docs/changing.html": page("Changing", '<h1 id="changing">Schedules</h1><p>Schedules use cron '
                                        'expressions evaluated in the UTC time zone.</p>'),
            "/docs/private/secret.html": page("Secret", "<h1>Secret</h1><p>Not for crawlers.</p>"),
        }
        self.sitemaps: dict[str, list[tuple[str, str | None]]] = {
            "/sitemap-a.xml": [("/docs/intro.html", "2026-01-01"), ("/docs/guide/", None), ("/docs/gone.html", None)],
            "/sitemap-b.xml": [("/docs/busy.html", None), ("/docs/changing.html", None),
                               ("/docs/private/secret.html", None), ("/docs/logo.png", None)],
        }
        self.robots = "User-agent: *\nDisallow: /docs/private/\n"
        self.busy_once = {"/docs/busy.html"}  # answered 429 (Retry-After: 1) the first time
        self.sitemap_status = 200
        self.requests: list[dict] = []
        super().__init__()

    def fetched(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def _respond(self, path: str, headers: dict) -> tuple[int, dict[str, str], bytes]:
        if path == "/robots.txt":
            return 200, {"Content-Type": "text/plain"}, self.robots.encode()
        if path == "/sitemap_index.xml":
            body = "".join(f"<sitemap><loc>{self.url}{name}</loc></sitemap>" for name in self.sitemaps)
            return self.sitemap_status, {"Content-Type": "application/xml"}, (
                '<?xml version="1.0" encoding="UTF-8"?><sitemapindex '
                f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</sitemapindex>').encode()
        if path in self.sitemaps:
            body = "".join(f"<url><loc>{self.url}{loc}</loc>{f'<lastmod>{mod}</lastmod>' if mod else ''}</url>"
                           for loc, mod in self.sitemaps[path])
            return 200, {"Content-Type": "application/xml"}, (
                '<?xml version="1.0" encoding="UTF-8"?><urlset '
                f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>').encode()
        if path in self.busy_once:
            self.busy_once.discard(path)
            return 429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"slow down"
        if path not in self.pages:
            return 404, {"Content-Type": "text/html"}, b"<html><body>not found</body></html>"
        body = self.pages[path].encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        return 200, {"Content-Type": "text/html; charset=utf-8", "ETag": etag}, body

    def _handler(self):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                headers = dict(self.headers)
                with site._lock:
                    site.requests.append({"path": self.path, "headers": headers, "at": time.monotonic()})
                status, response_headers, body = site._respond(self.path, headers)
                self.send_response(status)
                for key, value in response_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
