"""A documentation website served on loopback: robots.txt, a sitemap index over two sitemaps (a sitemap named
``*.gz`` is served gzipped), pages wrapped in navigation chrome with ETags (a matching If-None-Match gets a 304), a
page that is gone (404), one that first answers 429 with Retry-After, a path robots.txt disallows. Tests add
redirects, paths that fail (a status, a dropped connection, a non-HTML answer), files served as they are, pages sent
with ``Content-Encoding: gzip`` and more children of the sitemap index. Every request is recorded (its path with its
query); tests change pages between runs."""

from __future__ import annotations

import gzip
import hashlib
import time
from http.server import BaseHTTPRequestHandler
from xml.sax.saxutils import escape, quoteattr

from tests.support.loopback import LoopbackServer

CHROME = ('<html><head><title>{title} | Acme Docs</title>{canonical}</head><body>'
          '<header><nav><a href="/">Home</a> | <a href="/docs/">Docs</a> | Pricing</nav></header>'
          '<aside>On this page: everything</aside><main>{main}</main>'
          '<footer>Copyright Acme Corp, all rights reserved</footer><script>track()</script></body></html>')
DROP = "drop"  # a failing path's answer: the connection is closed without one
NOT_HTML = "not html"  # a failing path's answer: 200 with a JSON body


def page(title: str, main: str, canonical: str | None = None) -> str:
    link = f'<link rel="canonical" href="{quoteattr(canonical)[1:-1]}">' if canonical else ""
    return CHROME.format(title=title, main=main, canonical=link)


class LoopbackSite(LoopbackServer):
    def __init__(self) -> None:
        self.pages: dict[str, str] = {  # path (and query) -> HTML
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
        self.more_sitemaps: list[str] = []  # more children of the sitemap index: URLs, maybe of another site
        self.robots = "User-agent: *\nDisallow: /docs/private/\n"
        self.busy_once = {"/docs/busy.html"}  # answered 429 (Retry-After: 1) the first time
        self.failing: dict[str, int | str] = {}  # path -> what it answers every time: a status, DROP or NOT_HTML
        self.redirects: dict[str, str] = {}  # path -> Location of a 302
        self.files: dict[str, tuple[str, bytes]] = {}  # path -> (content type, body), served as they are
        self.gzip_encoded: set[str] = set()  # pages sent with Content-Encoding: gzip
        self.sitemap_status = 200
        self.requests: list[dict] = []
        super().__init__()

    def fetched(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def _respond(self, path: str, headers: dict) -> tuple[int, dict[str, str], bytes] | None:
        if path in self.failing:
            answer = self.failing[path]
            if answer == DROP:
                return None
            if answer == NOT_HTML:
                return 200, {"Content-Type": "application/json"}, b'{"challenge": "are you a robot?"}'
            return int(answer), {"Content-Type": "text/plain"}, b"no"
        if path in self.redirects:
            return 302, {"Location": self.redirects[path]}, b""
        if path in self.files:
            content_type, body = self.files[path]
            return 200, {"Content-Type": content_type}, body
        if path == "/robots.txt":
            return 200, {"Content-Type": "text/plain"}, self.robots.encode()
        if path == "/sitemap_index.xml":
            children = [f"{self.url}{name}" for name in self.sitemaps] + self.more_sitemaps
            body = "".join(f"<sitemap><loc>{escape(child)}</loc></sitemap>" for child in children)
            return self.sitemap_status, {"Content-Type": "application/xml"}, (
                '<?xml version="1.0" encoding="UTF-8"?><sitemapindex '
                f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</sitemapindex>').encode()
        if path in self.sitemaps:
            body = "".join(f"<url><loc>{escape(self.url + loc)}</loc>{f'<lastmod>{mod}</lastmod>' if mod else ''}"
                           "</url>" for loc, mod in self.sitemaps[path])
            xml = ('<?xml version="1.0" encoding="UTF-8"?><urlset '
                   f'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>').encode()
            if path.endswith(".gz"):
                return 200, {"Content-Type": "application/x-gzip"}, gzip.compress(xml)
            return 200, {"Content-Type": "application/xml"}, xml
        if path in self.busy_once:
            self.busy_once.discard(path)
            return 429, {"Retry-After": "1", "Content-Type": "text/plain"}, b"slow down"
        if path not in self.pages:
            return 404, {"Content-Type": "text/html"}, b"<html><body>not found</body></html>"
        body = self.pages[path].encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        if path in self.gzip_encoded:
            return 200, {"Content-Type": "text/html; charset=utf-8", "ETag": etag, "Content-Encoding": "gzip"}, (
                gzip.compress(body))
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
                answer = site._respond(self.path, headers)
                if answer is None:  # DROP: close the connection without an answer
                    self.close_connection = True
                    return
                status, response_headers, body = answer
                self.send_response(status)
                for key, value in response_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
