"""A documentation website as a location: ``https://docs.example.com/sitemap.xml`` (a sitemap or a sitemap index),
or a start URL whose path is the prefix to crawl (``https://example.com/docs/``) for a site with no sitemap.

Fetched politely with httpx: robots.txt honoured (the standard library's parser), one request at a time per process
at most every ``rate_limit_s``, retries with backoff on 429, 5xx and dropped connections (tenacity; a ``Retry-After``
is waited for, up to ``retry_after_max_s``), a time-out, a size cap per page (read up to it), and a user agent
naming askflow.

Incremental: each fetched page is kept in ``cache_dir`` (its extracted text and its ``ETag``/``Last-Modified``), and
the next run asks with ``If-None-Match``/``If-Modified-Since``: an unchanged page costs a 304, and one whose sitemap
``lastmod`` did not change costs no request at all. A page that is gone (404, 410) or not HTML becomes an empty
document, so its chunks go. An unreachable or empty sitemap fails the listing: nothing is pruned.

The main content is the page's ``main_selector`` element (``main``, ``article``, ``[role=main]`` by default) without
navigation, headers, footers and scripts; headings stay (section-aware chunks), with their ids as the sections'
anchors, and the page's canonical URL is its URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from askflow.domain.errors import AskflowError, InvalidInput
from askflow.domain.model import Document, SourceKind

log = logging.getLogger(__name__)
NOT_PAGES = (".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".zip", ".gz", ".css", ".js", ".json", ".xml", ".txt")
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


class SiteUnavailable(AskflowError):
    """The site's listing (its sitemap or start page) could not be read: nothing is indexed or pruned."""


class _Retryable(Exception):
    def __init__(self, status: int, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.retry_after_s = retry_after_s


@dataclass
class WebsiteLocation:
    start: str  # a sitemap URL, or the start URL of a crawl
    cache_dir: Path
    user_agent: str = "askflow-docs/0.1 (+https://github.com/askflow/askflow)"
    rate_limit_s: float = 0.5
    timeout_s: float = 20.0
    max_page_bytes: int = 2_000_000
    max_pages: int = 5000
    attempts: int = 4
    retry_after_max_s: float = 60.0
    main_selector: str = "main, article, [role=main]"
    _client: Any = field(default=None, repr=False)
    _robots: RobotFileParser | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_request: float = 0.0

    @classmethod
    def parse(cls, spec: str, *, cache_dir: Path, **settings: Any) -> WebsiteLocation:
        parts = urlsplit(spec)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(f"{spec!r}: a website is an http(s) URL of its sitemap or of where to start")
        return cls(start=spec, cache_dir=cache_dir, **settings)

    # -- the location -------------------------------------------------------------------------------------------
    def pin(self) -> str:
        return self.start

    @property
    def public(self) -> str:
        parts = urlsplit(self.start)
        return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))

    @property
    def _origin(self) -> str:
        parts = urlsplit(self.start)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def sitemap(self) -> bool:
        return PurePosixPath(urlsplit(self.start).path).suffix.lower() in (".xml", ".gz")

    def list(self) -> list[str]:
        """The pages' paths on the site (``docs/intro/``), sorted; the sitemap's ``lastmod`` of each is kept for
        ``load``. Raises ``SiteUnavailable`` when the listing cannot be read or lists nothing."""
        pages = self._sitemap_pages(self.start) if self.sitemap else self._crawl()
        allowed = {url: lastmod for url, lastmod in pages.items()
                   if self._same_site(url) and self._allowed(url) and not url.lower().endswith(NOT_PAGES)}
        if not allowed:
            raise SiteUnavailable(f"{self.public} lists no pages this crawler may fetch: refusing to index (and "
                                  "prune) nothing")
        self._write_json(self._cache_root / "listing.json", {_relative(url): lastmod for url, lastmod in
                                                             allowed.items()})
        return sorted({_relative(url) for url in allowed})

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        """The page as a document, fetched only if it may have changed (``base_url`` is not used: pages have
        theirs)."""
        url = f"{self._origin}/{relative.lstrip('/')}" if relative != "index" else f"{self._origin}/"
        doc_id = f"{source}:{relative}"
        cached = self._read_json(self._page_file(url))
        lastmod = (self._read_json(self._cache_root / "listing.json") or {}).get(relative)
        if cached and lastmod and cached.get("lastmod") == lastmod:
            return self._document(doc_id, cached)
        headers = {}
        if cached and cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        if cached and cached.get("last_modified"):
            headers["If-Modified-Since"] = cached["last_modified"]
        if not self._allowed(url):
            log.warning("%s: disallowed by robots.txt now; left out", url)
            return Document(doc_id=doc_id, text="", title="", url=url, kind=SourceKind.DOCS)
        response = self._get(url, headers=headers)
        if response.status_code == 304 and cached:
            return self._document(doc_id, cached | {"lastmod": lastmod})
        content_type = response.headers.get("Content-Type", "")
        if response.status_code in (404, 410) or response.status_code >= 400 or "html" not in content_type:
            log.info("%s: %s %s, left out", url, response.status_code, content_type or "no content type")
            self._page_file(url).unlink(missing_ok=True)
            return Document(doc_id=doc_id, text="", title="", url=url, kind=SourceKind.DOCS)
        title, text, anchors, canonical = extract_main(response.text, url, selector=self.main_selector)
        page = {"url": canonical, "title": title, "text": text, "anchors": anchors, "lastmod": lastmod,
                "etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified")}
        self._write_json(self._page_file(url), page)
        return self._document(doc_id, page)

    # -- listing ------------------------------------------------------------------------------------------------
    def _sitemap_pages(self, url: str, depth: int = 0) -> dict[str, str | None]:
        from defusedxml import ElementTree

        response = self._get(url)
        if response.status_code != 200:
            raise SiteUnavailable(f"sitemap {url}: HTTP {response.status_code}; nothing indexed or pruned")
        try:
            root = ElementTree.fromstring(response.content)
        except Exception as error:  # defusedxml's refusals and ParseError alike
            raise SiteUnavailable(f"sitemap {url}: not a sitemap ({type(error).__name__})") from error
        if root.tag == f"{_SITEMAP_NS}sitemapindex":
            if depth > 2:
                raise SiteUnavailable(f"sitemap {url}: sitemap indexes nested too deep")
            pages: dict[str, str | None] = {}
            for child in root.iter(f"{_SITEMAP_NS}loc"):
                pages |= self._sitemap_pages(urljoin(url, (child.text or "").strip()), depth + 1)
            return pages
        return {(entry.findtext(f"{_SITEMAP_NS}loc") or "").strip(): entry.findtext(f"{_SITEMAP_NS}lastmod")
                for entry in root.iter(f"{_SITEMAP_NS}url") if entry.findtext(f"{_SITEMAP_NS}loc")}

    def _crawl(self) -> dict[str, str | None]:
        """Pages reachable from the start URL whose path starts with its path, breadth first, up to
        ``max_pages``."""
        prefix = urlsplit(self.start).path
        queue, seen = [self.start], {_canonical(self.start)}
        pages: dict[str, str | None] = {}
        while queue and len(pages) < self.max_pages:
            url = queue.pop(0)
            if not self._allowed(url):
                continue
            response = self._get(url)
            if response.status_code != 200 or "html" not in response.headers.get("Content-Type", ""):
                if url == self.start:
                    raise SiteUnavailable(f"start page {url}: HTTP {response.status_code}; nothing indexed or pruned")
                continue
            pages[url] = None
            for link in re.findall(r'href="([^"#]+)', response.text):
                target = _canonical(urljoin(url, link))
                if self._same_site(target) and urlsplit(target).path.startswith(prefix) and target not in seen:
                    seen.add(target)
                    queue.append(target)
        return pages

    # -- fetching -----------------------------------------------------------------------------------------------
    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout_s, follow_redirects=True,
                                        headers={"User-Agent": self.user_agent})
        return self._client

    def _allowed(self, url: str) -> bool:
        if self._robots is None:
            robots = RobotFileParser()
            response = self._get(f"{self._origin}/robots.txt")
            robots.parse(response.text.splitlines() if response.status_code == 200 else [])
            self._robots = robots
        return self._robots.can_fetch(self.user_agent, url)

    def _get(self, url: str, *, headers: dict[str, str] | None = None):
        """One GET, politely spaced and retried; the body read up to ``max_page_bytes``."""
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        def wait(state) -> float:
            error = state.outcome.exception()
            backoff = wait_exponential(multiplier=0.5, max=self.retry_after_max_s)(state)
            if isinstance(error, _Retryable) and error.retry_after_s is not None:
                return min(error.retry_after_s, self.retry_after_max_s)
            return backoff

        def attempt():
            self._space()
            with self._http().stream("GET", url, headers=headers or {}) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise _Retryable(response.status_code, _retry_after(response.headers.get("Retry-After")))
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) >= self.max_page_bytes:
                        log.warning("%s: larger than %d bytes, read up to there", url, self.max_page_bytes)
                        break
                return httpx.Response(response.status_code, headers=response.headers, content=bytes(body),
                                      request=response.request)

        try:
            return Retrying(stop=stop_after_attempt(self.attempts), wait=wait, reraise=True,
                            retry=retry_if_exception_type((_Retryable, httpx.TransportError)))(attempt)
        except (_Retryable, httpx.TransportError) as error:
            raise SiteUnavailable(f"{url}: {error} after {self.attempts} attempts") from error

    def _space(self) -> None:
        with self._lock:
            wait = self._last_request + self.rate_limit_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_request = time.monotonic()

    def _same_site(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.start).netloc

    # -- the cache ----------------------------------------------------------------------------------------------
    @property
    def _cache_root(self) -> Path:
        return self.cache_dir / hashlib.sha256(self.start.encode()).hexdigest()[:16]

    def _page_file(self, url: str) -> Path:
        return self._cache_root / "pages" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _write_json(path: Path, value: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(value))
        partial.replace(path)

    @staticmethod
    def _document(doc_id: str, page: dict) -> Document:
        return Document(doc_id=doc_id, text=page["text"], title=page["title"], url=page["url"], kind=SourceKind.DOCS,
                        metadata={"format": "html", "anchors": page.get("anchors") or {}})


def extract_main(html: str, url: str, *, selector: str) -> tuple[str, str, dict[str, str], str]:
    """(title, Markdown-like text of the main content, heading → id, canonical URL) of a page."""
    from bs4 import BeautifulSoup

    from askflow.ingest.sources.files import html_to_markdown

    soup = BeautifulSoup(html, "html.parser")
    canonical_link = soup.find("link", rel="canonical")
    canonical = urljoin(url, canonical_link["href"]) if canonical_link and canonical_link.get("href") else url
    title = soup.title.get_text(strip=True) if soup.title else ""
    main = soup.select_one(selector) or soup.body or soup
    for chrome in main.select("nav, header, footer, aside, script, style, noscript, form"):
        chrome.decompose()
    anchors = {heading.get_text(" ", strip=True): heading["id"]
               for heading in main.find_all(["h1", "h2", "h3", "h4"]) if heading.get("id")}
    _, text = html_to_markdown(f"<html><body>{main}</body></html>")
    first_heading = main.find(["h1", "h2"])
    return (first_heading.get_text(" ", strip=True) if first_heading else title) or title, text, anchors, canonical


def _relative(url: str) -> str:
    parts = urlsplit(url)
    return parts.path.lstrip("/") or "index"


def _canonical(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
