"""A documentation website as a location: ``https://docs.example.com/sitemap.xml`` (a sitemap or a sitemap index,
gzipped or not), or a start URL whose path is the prefix to crawl (``https://example.com/docs/``) for a site with no
sitemap.

Confined to the hosts its location names: the start URL's host and port, and ``allowed_hosts`` (``host:port``
each). Redirects are followed by hand, a hop at a time, and a hop elsewhere is not taken; a sitemap index naming a
child sitemap elsewhere fails the listing; pages a sitemap lists elsewhere are left out; a page's ``rel=canonical``
is the URL it is cited by only when it is http(s) on an allowed host (the fetched URL otherwise). Every connection
goes to an address checked first: the host's name is resolved, an address that is not public (loopback, private,
link-local such as the metadata server's 169.254.169.254, shared, reserved, multicast) is refused unless one of
``allowed_networks`` holds it, and the request goes to that very address (the name travels in the Host header and
TLS's SNI), so a second resolution cannot move it.

Fetched politely with httpx: robots.txt honoured (the standard library's parser, per host), one request at a time
per process at most every ``rate_limit_s``, retries with backoff on 408, 429, 5xx and dropped connections
(tenacity; a ``Retry-After`` is waited for, up to ``retry_after_max_s``), a time-out, a size cap per page (read up
to it) and per sitemap (``max_sitemap_bytes``, decompressed too), and a user agent naming askflow.

Incremental: each fetched page is kept in ``cache_dir`` (its extracted text and its ``ETag``/``Last-Modified``), and
the next run asks with ``If-None-Match``/``If-Modified-Since``: an unchanged page costs a 304, and one whose sitemap
``lastmod`` did not change costs no request at all. A crawl fetches each page once: the listing reads it, and
``load`` takes it from the cache (the listing's stamp on it says it is this listing's).

What the listing found of each page (``listed``: its ``lastmod``, the crawl's stamp, or why it could not be read) is
this run's alone, and goes wherever its pages are loaded: the same object, or another one on another worker, told
by ``remember`` (the docs DAG carries it with the paths through XCom). Nothing of it is kept on disk, so a worker
never loads by an earlier run's listing: a page nobody told it of is fetched conditionally, never taken as listed.

A page's relative path is its path and query on the start URL's host (``docs/intro.html``, ``docs/api?v=2``;
``ignored_query_params`` such as ``utm_*`` dropped, so the same page linked from a newsletter stays one document),
or its whole URL on another allowed host.

What goes and what stays: a page that is gone (404, 410), disallowed by robots.txt or not HTML (and never was)
becomes an empty document, so its chunks go. Any other failure (401, 403, 451 or another 4xx; 408, 429 or 5xx after
the retries; a dropped connection; a redirect it may not follow; a non-HTML answer where there was HTML) makes an
*unavailable* document (``Document.unavailable``): what is stored of it stays, and the run reports it. An unreachable
or empty sitemap fails the listing: nothing is pruned.

The main content is the page's ``main_selector`` element (``main``, ``article``, ``[role=main]`` by default) without
navigation, headers, footers and scripts; headings stay (section-aware chunks), with their ids as the sections'
anchors.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import unquote_plus, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from askflow.domain.errors import AskflowError, InvalidInput
from askflow.domain.model import Document, SourceKind

log = logging.getLogger(__name__)
NOT_PAGES = (".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".zip", ".gz", ".css", ".js", ".json", ".xml", ".txt")
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
_GZIP_MAGIC = b"\x1f\x8b"


class SiteUnavailable(AskflowError):
    """The site's listing (its sitemap or start page) could not be read: nothing is indexed or pruned."""


class _Unreachable(Exception):
    """A URL this location could not read: refused (another host, an address that is not public, too many
    redirects) or still failing after every retry."""


class _Retryable(Exception):
    def __init__(self, status: int, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class _Answer:
    """A response as read: the URL it answered (after the redirects followed), its status and headers, and its body
    (up to the cap, any ``Content-Encoding`` undone)."""

    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes
    encoding: str

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


@dataclass(frozen=True)
class _Read:
    """What reading a page gave: the page as cached, or why it is gone, or why it could not be read now."""

    page: dict | None = None
    gone: str | None = None
    unavailable: str | None = None


@dataclass
class WebsiteLocation:
    start: str  # a sitemap URL, or the start URL of a crawl
    cache_dir: Path
    user_agent: str = "askflow-docs/0.1 (+https://github.com/askflow/askflow)"
    rate_limit_s: float = 0.5
    timeout_s: float = 20.0
    max_page_bytes: int = 2_000_000
    max_sitemap_bytes: int = 50 * 2**20  # the sitemap protocol's limit, uncompressed
    max_pages: int = 5000
    attempts: int = 4
    retry_after_max_s: float = 60.0
    main_selector: str = "main, article, [role=main]"
    allowed_hosts: tuple[str, ...] = ()  # "host:port" besides the start URL's, where pages, hops, sitemaps may be
    allowed_networks: tuple[str, ...] = ()  # CIDR networks of addresses that are not public but may be connected to
    ignored_query_params: tuple[str, ...] = ()  # names (fnmatch patterns) a page's query string is read without
    _hosts: frozenset[tuple[str, int]] = field(default=frozenset(), init=False, repr=False)
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=(), init=False, repr=False)
    _client: Any = field(default=None, repr=False)
    _robots: dict[str, RobotFileParser] = field(default_factory=dict, repr=False)
    _listing: dict[str, dict] = field(default_factory=dict, repr=False)  # what ``list`` found of each page
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_request: float = 0.0

    def __post_init__(self) -> None:
        home = _endpoint(self.start)
        if home is None:
            raise InvalidInput(f"{self.start!r}: a website is an http(s) URL of its sitemap or of where to start")
        hosts = {home}
        for entry in self.allowed_hosts:
            parts = urlsplit(f"//{entry.strip()}")
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None or parts.path or parts.username is not None:
                raise InvalidInput(f"allowed host {entry!r}: expected host:port (docs.example.com:443, [::1]:8080)")
            hosts.add((parts.hostname, port))
        self._hosts = frozenset(hosts)
        try:
            self._networks = tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in self.allowed_networks)
        except ValueError as error:
            raise InvalidInput(f"allowed network: {error} (expected a CIDR network, 10.0.0.0/8)") from None

    @classmethod
    def parse(cls, spec: str, *, cache_dir: Path, **settings: Any) -> WebsiteLocation:
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
        """The pages' relative paths (``docs/intro/``), sorted; what ``load`` needs of each (its sitemap
        ``lastmod``, or that the crawl fetched it or could not) is kept as ``listed``. Raises ``SiteUnavailable``
        when the listing cannot be read or lists nothing."""
        try:
            listed = self._sitemap_listing() if self.sitemap else self._crawl()
        except _Unreachable as error:  # robots.txt, which the listing consults
            raise SiteUnavailable(f"{self.public}: {error}; nothing indexed or pruned") from error
        if not listed:
            raise SiteUnavailable(f"{self.public} lists no pages this crawler may fetch: refusing to index (and "
                                  "prune) nothing")
        self._listing = {self._relative(url): entry for url, entry in listed.items()}
        return sorted(self._listing)

    @property
    def listed(self) -> dict[str, dict]:
        """What this object's ``list`` found of each page that ``load`` needs, by relative path (JSON: a task hands
        it to the tasks that load)."""
        return dict(self._listing)

    def remember(self, listed: Mapping[str, dict]) -> None:
        """Load pages as another object's ``list`` found them (its ``listed``, or part of it)."""
        self._listing |= listed

    def load(self, relative: str, *, source: str, base_url: str | None) -> Document:
        """The page as a document, fetched only if it may have changed (``base_url`` is not used: pages have
        theirs); empty when the page is gone, unavailable when it could not be read now."""
        url = self._url(relative)
        doc_id = f"{source}:{relative}"
        entry = self._listing.get(relative, {})
        if "unavailable" in entry:  # what the crawl found, fetching it once
            read = _Read(unavailable=entry["unavailable"])
        else:
            read = self._read(url, entry.get("version"))
        if read.page is not None:
            return dataclasses.replace(self._document(doc_id, read.page), location=self.public,
                                       version=page_version(read.page))
        if read.unavailable:
            log.warning("%s: %s; what is stored of it is kept", url, read.unavailable)
        else:
            log.info("%s: %s, left out", url, read.gone)
        return Document(doc_id=doc_id, text="", title="", url=url, kind=SourceKind.DOCS, unavailable=read.unavailable)

    # -- listing ------------------------------------------------------------------------------------------------
    def _sitemap_listing(self) -> dict[str, dict]:
        """The sitemap's pages this location may fetch, each with its ``lastmod`` as its version."""
        listed: dict[str, dict] = {}
        elsewhere = []
        for listed_url, lastmod in self._sitemap_pages(self.start).items():
            url = self._normalized(listed_url)
            if _endpoint(url) not in self._hosts:
                elsewhere.append(listed_url)
            elif not _not_a_page(url) and self._allowed(url):
                listed.setdefault(url, {"version": lastmod})
        if elsewhere:
            log.warning("%d pages listed on hosts this location may not fetch from are left out, such as %s",
                        len(elsewhere), elsewhere[0])
        return listed

    def _sitemap_pages(self, url: str, depth: int = 0) -> dict[str, str | None]:
        from defusedxml import ElementTree

        try:
            answer = self._get(url, limit=self.max_sitemap_bytes + 1)
        except _Unreachable as error:
            raise SiteUnavailable(f"sitemap {url}: {error}; nothing indexed or pruned") from error
        if answer.status != 200:
            raise SiteUnavailable(f"sitemap {url}: HTTP {answer.status}; nothing indexed or pruned")
        if len(answer.content) > self.max_sitemap_bytes:
            raise SiteUnavailable(f"sitemap {url}: larger than {self.max_sitemap_bytes} bytes")
        xml = self._ungzipped(url, answer.content)
        try:
            root = ElementTree.fromstring(xml)
        except Exception as error:  # defusedxml's refusals and ParseError alike
            raise SiteUnavailable(f"sitemap {url}: not a sitemap ({type(error).__name__})") from error
        if root.tag == f"{_SITEMAP_NS}sitemapindex":
            if depth > 2:
                raise SiteUnavailable(f"sitemap {url}: sitemap indexes nested too deep")
            pages: dict[str, str | None] = {}
            for child in root.iter(f"{_SITEMAP_NS}loc"):
                pages |= self._sitemap_pages(self._normalized(urljoin(url, (child.text or "").strip())), depth + 1)
            return pages
        return {(entry.findtext(f"{_SITEMAP_NS}loc") or "").strip(): entry.findtext(f"{_SITEMAP_NS}lastmod")
                for entry in root.iter(f"{_SITEMAP_NS}url") if entry.findtext(f"{_SITEMAP_NS}loc")}

    def _ungzipped(self, url: str, content: bytes) -> bytes:
        """A sitemap's XML: a gzipped one (``.xml.gz``: gzip's magic bytes, whatever its name and type say; a body
        whose ``Content-Encoding`` was gzip httpx has already undone) inflated up to ``max_sitemap_bytes`` and
        refused beyond, so a decompression bomb never grows in memory."""
        if not content.startswith(_GZIP_MAGIC):
            return content
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            xml = inflater.decompress(content, self.max_sitemap_bytes + 1)
        except zlib.error as error:
            raise SiteUnavailable(f"sitemap {url}: broken gzip ({error})") from error
        if len(xml) > self.max_sitemap_bytes:
            raise SiteUnavailable(f"sitemap {url}: larger than {self.max_sitemap_bytes} bytes once decompressed")
        if not inflater.eof:
            raise SiteUnavailable(f"sitemap {url}: its gzip stream is cut short")
        return xml

    def _crawl(self) -> dict[str, dict]:
        """Pages reachable from the start URL whose path starts with its path, breadth first, up to ``max_pages`` (a
        site with more fails the listing rather than prune what it did not reach), each fetched once: here, its
        cached copy stamped with this listing's stamp, which ``load`` then finds. A page that could not be read is
        listed as such (its stored version stays), and the links its cached copy had are followed still, so that
        what lies behind it is not pruned."""
        stamp = f"crawl:{uuid.uuid4().hex}"
        start = self._normalized(self.start)
        queue, seen = deque([start]), {start}
        listed: dict[str, dict] = {}
        while queue and len(listed) < self.max_pages:
            url = queue.popleft()
            read = self._read(url, stamp)
            if read.page is None and url == start:
                raise SiteUnavailable(f"start page {url}: {read.unavailable or read.gone}; nothing indexed or pruned")
            if read.page is not None:
                listed[url], page = {"version": stamp}, read.page
            elif read.unavailable:
                listed[url], page = {"unavailable": read.unavailable}, self._read_json(self._page_file(url)) or {}
            else:
                continue
            for link in page.get("links") or []:
                if link not in seen:
                    seen.add(link)
                    queue.append(link)
        if queue:  # pages were left unread: a listing cut short would prune them, so none is taken
            raise SiteUnavailable(f"the crawl of {start} reached ASKFLOW_WEB_MAX_PAGES ({self.max_pages}) with "
                                  f"{len(queue)} pages left unread; nothing indexed or pruned (raise the limit)")
        return listed

    def _in_crawl(self, url: str) -> bool:
        parts = urlsplit(url)
        return (self._on_home(url) and parts.path.startswith(urlsplit(self.start).path or "/")
                and not _not_a_page(url))

    # -- a page -------------------------------------------------------------------------------------------------
    def _read(self, url: str, version: str | None) -> _Read:
        """The page at ``url``: the cached copy when the listing's ``version`` of it is the cached one; otherwise
        fetched conditionally (a 304 keeps the cached copy) and extracted; or why it is gone or unreadable now."""
        page_file = self._page_file(url)
        cached = self._read_json(page_file)
        if cached and not self.sitemap and "links" not in cached:  # cached before crawls kept links: read it whole
            cached = None
        if cached and version and cached.get("version") == version:
            return _Read(page=cached)
        validators = {header: cached[key] for header, key in (("If-None-Match", "etag"),
                                                              ("If-Modified-Since", "last_modified"))
                      if cached and cached.get(key)}
        try:
            if not self._allowed(url):
                return _Read(gone="disallowed by robots.txt now")
            answer = self._get(url, headers=validators, robots=True)
        except _Unreachable as error:
            return _Read(unavailable=str(error))
        if answer.status == 304 and cached:
            page = cached | {"version": version}
            if page == cached:
                return _Read(page=page)
        elif answer.status in (404, 410):
            page_file.unlink(missing_ok=True)
            return _Read(gone=f"HTTP {answer.status}")
        elif not 200 <= answer.status < 300:
            return _Read(unavailable=f"HTTP {answer.status}")
        elif "html" not in answer.content_type:
            kind = answer.content_type or "no content type"
            return _Read(unavailable=f"answered {kind}, was HTML") if cached else _Read(gone=f"not HTML ({kind})")
        else:
            page = self._extracted(answer) | {"version": version}
        self._write_json(page_file, page)
        return _Read(page=page)

    def _extracted(self, answer: _Answer) -> dict:
        """The page as cached: its main content, the URL it is cited by (its canonical URL when that is http(s) on
        an allowed host, else the URL that answered), its validators and, for a crawl, its links to follow."""
        content = extract_main(answer.text, answer.url, selector=self.main_selector)
        links = [] if self.sitemap else sorted({url for url in map(self._normalized, content.links)
                                                if self._in_crawl(url)})
        cited = content.canonical if content.canonical and _endpoint(content.canonical) in self._hosts else answer.url
        return {"url": cited, "title": content.title, "text": content.text, "anchors": content.anchors,
                "links": links, "etag": answer.headers.get("ETag"),
                "last_modified": answer.headers.get("Last-Modified")}

    # -- fetching -----------------------------------------------------------------------------------------------
    def _http(self):
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout_s, headers={"User-Agent": self.user_agent})
        return self._client

    def _allowed(self, url: str) -> bool:
        """Whether robots.txt of ``url``'s host lets this crawler fetch it (read once per host); raises
        ``_Unreachable`` when robots.txt cannot be read."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            robots = RobotFileParser()
            try:
                answer = self._get(f"{origin}/robots.txt")
            except _Unreachable as error:
                raise _Unreachable(f"{origin}/robots.txt: {error}") from error
            robots.parse(answer.text.splitlines() if answer.status == 200 else [])
            self._robots[origin] = robots
        return self._robots[origin].can_fetch(self.user_agent, url)

    def _get(self, url: str, *, headers: dict[str, str] | None = None, limit: int | None = None,
             robots: bool = False) -> _Answer:
        """GET ``url`` with its redirects followed by hand (at most ``MAX_REDIRECTS``): every hop must be on an
        allowed host and, for a page (``robots``), allowed by robots.txt; each one is fetched by ``_get_once``.
        Raises ``_Unreachable`` for a hop it may not take or a request that keeps failing."""
        for hop in range(MAX_REDIRECTS + 1):
            redirected = f"redirected to {url}: " if hop else ""
            endpoint = _endpoint(url)
            if endpoint not in self._hosts:
                where = f"{endpoint[0]}:{endpoint[1]}" if endpoint else "not an http(s) URL"
                raise _Unreachable(f"{redirected}{where}, not a host this location may fetch from (its own, and "
                                   "more in ASKFLOW_WEB_ALLOWED_HOSTS)")
            if robots and hop and not self._allowed(url):
                raise _Unreachable(f"{redirected}disallowed by robots.txt")
            try:
                answer = self._get_once(url, headers or {}, limit or self.max_page_bytes)
            except _Unreachable as error:
                raise _Unreachable(f"{redirected}{error}") from error
            if answer.status not in REDIRECTS or not answer.headers.get("Location"):
                return answer
            url = self._normalized(urljoin(url, answer.headers["Location"]))
        raise _Unreachable(f"more than {MAX_REDIRECTS} redirects")

    def _get_once(self, url: str, headers: dict[str, str], limit: int) -> _Answer:
        """One GET of ``url`` (a redirect is returned, not followed), politely spaced and retried, over a connection
        to one of the addresses its host resolves to, each checked first (``_addresses``)."""
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        def wait(state) -> float:
            error = state.outcome.exception()
            backoff = wait_exponential(multiplier=0.5, max=self.retry_after_max_s)(state)
            if isinstance(error, _Retryable) and error.retry_after_s is not None:
                return min(error.retry_after_s, self.retry_after_max_s)
            return backoff

        def attempt() -> _Answer:
            self._space()
            *others, last = self._addresses(url)
            for address in others:
                try:
                    return self._send(url, address, headers, limit)
                except httpx.ConnectError:
                    continue
            return self._send(url, last, headers, limit)

        try:
            return Retrying(stop=stop_after_attempt(self.attempts), wait=wait, reraise=True,
                            retry=retry_if_exception_type((_Retryable, httpx.TransportError)))(attempt)
        except (_Retryable, httpx.TransportError) as error:
            raise _Unreachable(f"{str(error) or type(error).__name__} after {self.attempts} attempts") from error

    def _addresses(self, url: str) -> list[str]:
        """The addresses ``url``'s host resolves to, every one public or in ``allowed_networks``; one that is not
        refuses the host (``_Unreachable``). A name that does not resolve is a connection error (retried)."""
        import httpx

        host, port = _endpoint(url)
        try:
            resolved = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise httpx.ConnectError(f"{host} does not resolve: {error}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in resolved))
        for address in addresses:
            refused = self._refusal(ipaddress.ip_address(address))
            if refused:
                raise _Unreachable(f"{host} is at {address}, {refused}: refused (a network to allow goes in "
                                   "ASKFLOW_WEB_ALLOWED_NETWORKS)")
        return addresses

    def _refusal(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """Why this location may not connect to ``address`` (``None``: it may): only public addresses, and those
        in ``allowed_networks``."""
        address = _embedded_ipv4(address)
        if any(address in network for network in self._networks):
            return None
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address (the metadata server's among them)"
        if address.is_private:
            return "a private address"
        return None if address.is_global and not address.is_multicast else "not a public address"

    def _send(self, url: str, address: str, headers: dict[str, str], limit: int) -> _Answer:
        """One GET of ``url`` over a connection to ``address`` (pinned: the URL's host name goes in the Host header
        and, for https, in TLS's SNI, against which the certificate is checked), the body read up to ``limit``."""
        import httpx

        target = httpx.URL(url)
        extensions = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
        with self._http().stream("GET", target.copy_with(host=address), extensions=extensions,
                                 headers={"Host": target.netloc.decode("ascii"), "Accept-Encoding": "gzip, deflate",
                                          **headers}) as response:
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise _Retryable(response.status_code, _retry_after(response.headers.get("Retry-After")))
            inflate = _inflater(response.headers.get("Content-Encoding", ""))
            if inflate is False:  # more than one layer, or one not asked for: never inflated at all
                log.warning("%s: Content-Encoding %r is not read", url, response.headers.get("Content-Encoding"))
                return _Answer(url=url, status=406, headers=response.headers, content=b"", encoding="utf-8")
            body = bytearray()
            # the raw bytes, inflated here with a cap per step: httpx would inflate a whole network chunk first
            for chunk in response.iter_raw():
                body += inflate.decompress(chunk, limit + 1 - len(body)) if inflate is not None else chunk
                if len(body) >= limit:
                    log.warning("%s: larger than %d bytes, read up to there", url, limit)
                    break
            return _Answer(url=url, status=response.status_code, headers=response.headers,
                           content=bytes(body[:limit]), encoding=response.encoding or "utf-8")

    def _space(self) -> None:
        with self._lock:
            wait = self._last_request + self.rate_limit_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_request = time.monotonic()

    # -- URLs ---------------------------------------------------------------------------------------------------
    def _normalized(self, url: str) -> str:
        """``url`` without its fragment and its ``ignored_query_params`` (the rest of the query kept as written)."""
        parts = urlsplit(url)
        query = "&".join(pair for pair in parts.query.split("&") if pair and not self._ignored(pair))
        return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", query, ""))

    def _ignored(self, pair: str) -> bool:
        name = unquote_plus(pair.partition("=")[0]).lower()
        return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.ignored_query_params)

    def _on_home(self, url: str) -> bool:
        """Whether ``url`` is on the start URL's scheme, host and port."""
        return urlsplit(url).scheme == urlsplit(self.start).scheme and _endpoint(url) == _endpoint(self.start)

    def _relative(self, url: str) -> str:
        """A page's relative path: its path and query on the start URL's host (the root is ``index``), its whole URL
        on another."""
        if not self._on_home(url):
            return url
        parts = urlsplit(url)
        path = parts.path.lstrip("/") or "index"
        return f"{path}?{parts.query}" if parts.query else path

    def _url(self, relative: str) -> str:
        if relative.startswith(("http://", "https://")):
            return relative
        path, _, query = relative.partition("?")
        url = f"{self._origin}/{'' if path == 'index' else path.lstrip('/')}"
        return f"{url}?{query}" if query else url

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


def page_version(page: dict) -> str:
    """A cached page's version (its provenance): its ``ETag`` and ``Last-Modified``, else its sitemap ``lastmod``
    (empty when it had none: its content's fingerprint stands for it)."""
    said = [f"{name} {page[key]}" for name, key in (("etag", "etag"), ("last-modified", "last_modified"),
                                                    ("lastmod", "version")) if page.get(key)]
    return "; ".join(said[:2])


class MainContent(NamedTuple):
    title: str
    text: str  # Markdown-like
    anchors: dict[str, str]  # heading -> id
    canonical: str | None  # what the page's rel=canonical says, resolved against its URL (unchecked)
    links: list[str]  # every <a href>, resolved against its URL


def extract_main(html: str, url: str, *, selector: str) -> MainContent:
    """A page's title, main content without its chrome, heading anchors, canonical link and links."""
    from bs4 import BeautifulSoup

    from askflow.ingest.sources.files import html_to_markdown

    soup = BeautifulSoup(html, "html.parser")
    canonical_link = soup.find("link", rel="canonical")
    canonical = urljoin(url, canonical_link["href"].strip()) if canonical_link and canonical_link.get("href") else None
    links = [urljoin(url, anchor["href"].strip()) for anchor in soup.find_all("a", href=True)]
    title = soup.title.get_text(strip=True) if soup.title else ""
    main = soup.select_one(selector) or soup.body or soup
    for chrome in main.select("nav, header, footer, aside, script, style, noscript, form"):
        chrome.decompose()
    anchors = {heading.get_text(" ", strip=True): heading["id"]
               for heading in main.find_all(["h1", "h2", "h3", "h4"]) if heading.get("id")}
    _, text = html_to_markdown(f"<html><body>{main}</body></html>")
    first_heading = main.find(["h1", "h2"])
    heading = first_heading.get_text(" ", strip=True) if first_heading else title
    return MainContent(heading or title, text, anchors, canonical, links)


def _endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, its port made explicit; ``None`` for any other URL, and for one a browser would
    read another host from than this parser does: a backslash, user info, a control character or a space."""
    if any(c == "\\" or c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname, port or (443 if parts.scheme.lower() == "https" else 80)


def _inflater(content_encoding: str):
    """What inflates a body sent with ``content_encoding``: ``None`` for none, a zlib decompressor for one gzip or
    deflate layer, ``False`` for anything else (two layers, br, zstd: not read)."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip().lower() not in ("", "identity")]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header, told apart by zlib
    return False


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, IPv4-compatible), which is where it leads; else
    the address itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64) or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _not_a_page(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(NOT_PAGES)


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
