"""A documentation website as a source: a loopback site (sitemap index, two sitemaps, chrome around the content, a
404, a 429 with Retry-After, robots.txt, a page changed between runs) ingested by `askflow ingest` and by the docs
DAG under dag.test(); then, in this process, what a site cannot make the crawler do: fetch from another host or
port (a redirect, a child sitemap, a canonical link) or a loopback address unless allowed, delete a page that only
failed, fold pages that differ by their query into one, or fetch a page twice in a crawl."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.adapters.web_documents import SiteUnavailable, WebsiteLocation
from askflow.config import Settings
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import IndexingResult, SourceIncomplete, index_documents
from askflow.ingest.pipeline import batches, index_batch, list_documents, prune_and_finalize
from askflow.service_layer.links import passage_link
from tests.fakes import FakeVectorStore, HashEmbeddings
from tests.support.dag_runner import dag_env, run_dag
from tests.support.loopback_site import DROP, NOT_HTML, LoopbackSite, page
from tests.test_cli import askflow

PAGES = {"web:docs/intro.html", "web:docs/guide/", "web:docs/busy.html", "web:docs/changing.html"}
LOOPBACK = ["127.0.0.1/32"]  # the loopback sites' address: refused unless allowed


@pytest.fixture
def site():
    served = LoopbackSite()
    yield served
    served.stop()


@pytest.fixture
def other():
    """Another site on another loopback port: nothing of ``site`` may lead the crawler there unless allowed."""
    served = LoopbackSite()
    yield served
    served.stop()


def _ingest(site: LoopbackSite, env: dict[str, str], sitemap: str = "/sitemap_index.xml"):
    result = askflow("ingest", f"{site.url}{sitemap}", "--source", "web", env=env)
    return result, (json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None)


def test_a_site_is_ingested_politely_then_incrementally(site, pg_url, collection_name, tmp_path):
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name, "ASKFLOW_DATA_DIR": str(tmp_path),
           "ASKFLOW_WEB_RATE_LIMIT_S": "0", "ASKFLOW_WEB_ALLOWED_NETWORKS": json.dumps(LOOPBACK)}
    store = PgVectorStore(url=pg_url, collection=collection_name)

    first, summary = _ingest(site, env)
    assert first.returncode == 0, first.stderr
    assert set(store.document_fingerprints("web:")) == PAGES  # the 404, the image and the disallowed page: out
    assert not site.fetched("/docs/private/secret.html") and not site.fetched("/docs/logo.png")
    busy = site.fetched("/docs/busy.html")
    assert len(busy) == 2 and busy[1]["at"] - busy[0]["at"] >= 1.0  # the 429's Retry-After was waited for
    assert all(r["headers"]["User-Agent"].startswith("askflow-docs/") for r in site.requests)
    intro = [c for c in store.keyword_search("install acme package pip", limit=10, audiences=None)
             if c.chunk.doc_id.endswith("intro.html")]
    chunk = intro[0].chunk
    text = " ".join(c.chunk.content for c in intro)
    assert "Install the acme package" in text and "Pricing" not in text and "Copyright" not in text  # no chrome
    assert chunk.url == f"{site.url}/docs/intro.html" and chunk.metadata["anchors"]["Install it"] == "install-it"
    link = passage_link(chunk.url, doc_id=chunk.doc_id, kind=chunk.kind.value, section=chunk.section,
                        excerpt=chunk.content, anchors=chunk.metadata["anchors"])
    assert link.startswith(f"{site.url}/docs/intro.html#install-it")  # cited at its section

    site.requests.clear()
    again, summary = _ingest(site, env)
    assert again.returncode == 0, again.stderr
    assert summary["documents_written"] == 0 and summary["documents_pruned"] == 0  # nothing written
    pages = [r for r in site.requests if r["path"].startswith("/docs/") and r["path"] != "/docs/gone.html"]
    assert pages and all("If-None-Match" in r["headers"] for r in pages)  # conditional requests only (the 404:
    # no validator to send, asked again in case it is back)
    assert not site.fetched("/docs/intro.html")  # its sitemap lastmod did not change: not even asked

    site.pages["/docs/changing.html"] = page("Changing", '<h1 id="changing">Schedules</h1><p>Schedules now use '
                                             'the time zone of the deployment.</p>')
    site.sitemaps["/sitemap-a.xml"] = [e for e in site.sitemaps["/sitemap-a.xml"] if e[0] != "/docs/guide/"]
    changed, summary = _ingest(site, env)
    assert changed.returncode == 0, changed.stderr
    assert summary["documents_written"] == 1 and summary["documents_pruned"] == 1
    assert set(store.document_fingerprints("web:")) == PAGES - {"web:docs/guide/"}

    kept = store.document_fingerprints("web:")
    site.failing = {"/docs/busy.html": 403, "/docs/changing.html": 403}  # a WAF: half the pages refused
    blocked, _ = _ingest(site, env)
    assert blocked.returncode == 2 and "2 of 4 documents could not be read" in blocked.stderr
    assert "web:docs/busy.html: HTTP 403" in blocked.stderr and "Traceback" not in blocked.stderr
    assert store.document_fingerprints("web:") == kept  # more than ASKFLOW_WEB_MAX_UNAVAILABLE_SHARE: failed, kept
    site.failing.clear()
    site.sitemaps = {"/sitemap-a.xml": [], "/sitemap-b.xml": []}
    empty, _ = _ingest(site, env)
    assert empty.returncode == 2 and "lists no pages" in empty.stderr
    site.sitemap_status = 503  # unreachable: every retry fails
    down, _ = _ingest(site, env)
    assert down.returncode == 2 and "sitemap" in down.stderr and "Traceback" not in down.stderr
    assert store.document_fingerprints("web:") == kept  # neither deleted anything
    store.close()


@pytest.mark.airflow
def test_the_docs_dag_ingests_a_site_from_its_sitemap(site, airflow_env, pg_url, wire, collection_name, tmp_path):
    env = dag_env(airflow_env, pg_url, wire, collection_name, data_dir=tmp_path, web_rate_limit_s=0,
                  web_allowed_networks=LOOPBACK)
    conf = {"docs_location": f"{site.url}/sitemap_index.xml", "source": "web", "collection": collection_name,
            "batch_size": 2}
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    store = PgVectorStore(url=pg_url, collection=collection_name)
    assert set(store.document_fingerprints("web:")) == PAGES
    store.close()


# -- in this process: the location and the indexing the CLI runs, on an in-memory store -----------------------------
IGNORED = tuple(Settings.model_fields["web_ignored_query_params"].default)


def _location(site: LoopbackSite, tmp_path, start: str = "/sitemap_index.xml", **settings) -> WebsiteLocation:
    """A fresh location (as each run's process opens one) sharing the cache under ``tmp_path``."""
    options = {"rate_limit_s": 0, "attempts": 2, "retry_after_max_s": 0.2, "allowed_networks": tuple(LOOPBACK),
               "ignored_query_params": IGNORED} | settings
    return WebsiteLocation.parse(f"{site.url}{start}", cache_dir=tmp_path / "web", **options)


def _run(location: WebsiteLocation, store: FakeVectorStore, **options) -> IndexingResult:
    """What `askflow ingest URL --source web` does: list, load every page, index with pruning."""
    documents = [location.load(relative, source="web", base_url=None) for relative in location.list()]
    return index_documents(documents, store=store, embeddings=HashEmbeddings(), strategy=ChunkingStrategy(),
                           source="web", **options)


def _urls(store: FakeVectorStore) -> dict[str, str]:
    return {chunk.doc_id: chunk.url for chunk, _ in store.stored.values()}


@pytest.mark.parametrize("answer", [401, 403, 408, 429, 451, 500, 503, DROP, NOT_HTML])
def test_a_page_that_fails_keeps_what_is_stored_and_the_run_reports_it(site, tmp_path, answer):
    store = FakeVectorStore()
    _run(_location(site, tmp_path), store)
    stored = dict(store.stored)
    assert set(store.document_fingerprints("web:")) == PAGES

    site.failing["/docs/changing.html"] = answer  # for one run: a WAF's 403, a 503 after the retries, ...
    result = _run(_location(site, tmp_path), store, max_unavailable_share=0.5)
    assert store.stored == stored and result.documents_pruned == 0  # every chunk kept
    assert list(result.unavailable) == ["web:docs/changing.html"]
    assert result.to_dict()["unavailable"]["web:docs/changing.html"]  # reported, with why

    del site.failing["/docs/changing.html"]
    site.pages["/docs/changing.html"] = page("Changing", '<h1 id="changing">Schedules</h1><p>Schedules now use '
                                             'the time zone of the deployment.</p>')
    after = _run(_location(site, tmp_path), store)
    assert after.unavailable == {} and after.documents_written == 1  # back, and read again


@pytest.mark.parametrize("status", [404, 410])
def test_a_page_that_is_gone_loses_its_chunks(site, tmp_path, status):
    store = FakeVectorStore()
    _run(_location(site, tmp_path), store)
    site.failing["/docs/changing.html"] = status
    result = _run(_location(site, tmp_path), store)
    assert set(store.document_fingerprints("web:")) == PAGES - {"web:docs/changing.html"}
    assert result.unavailable == {} and result.documents_written == 1  # written empty: its chunks deleted


def test_more_unavailable_pages_than_the_share_fail_the_run_and_keep_them(site, tmp_path):
    store = FakeVectorStore()
    _run(_location(site, tmp_path), store)
    stored = dict(store.stored)
    site.failing |= {"/docs/busy.html": 403, "/docs/guide/": 503}
    with pytest.raises(SourceIncomplete, match=r"2 of 5 documents could not be read \(web:docs/busy.html: HTTP 403;"):
        _run(_location(site, tmp_path), store, max_unavailable_share=0.25)
    assert store.stored == stored
    assert _run(_location(site, tmp_path), store, max_unavailable_share=0.4).unavailable.keys() == {
        "web:docs/busy.html", "web:docs/guide/"}  # 2 of 5 is not more than 40%

    # the DAG's steps: each batch reports its unavailable pages, the prune step fails the run once it has pruned
    location = _location(site, tmp_path)
    paths = location.list()
    results = [index_batch(location, batch, store=store, embeddings=HashEmbeddings(), strategy=ChunkingStrategy(),
                           source="web") for batch in (paths[:2], paths[2:])]
    unavailable = {doc_id: why for r in results for doc_id, why in r["unavailable"].items()}
    assert unavailable.keys() == {"web:docs/busy.html", "web:docs/guide/"}
    listed = [path for path in paths if path != "docs/changing.html"]  # gone from the sitemap since
    with pytest.raises(SourceIncomplete, match="2 of 4 documents"):
        prune_and_finalize(listed, store=store, embeddings=HashEmbeddings(), source="web",
                           answers_source="answers", unavailable=unavailable, max_unavailable_share=0.25)
    assert set(store.document_fingerprints("web:")) == PAGES - {"web:docs/changing.html"}  # pruned, then failed


def test_a_redirect_is_followed_only_to_an_allowed_host_and_port(site, other, tmp_path):
    store = FakeVectorStore()
    site.pages["/docs/moved.html"] = page("Moved", '<h1 id="moved">Moved</h1><p>Acme moved this page.</p>')
    site.redirects["/docs/busy.html"] = "/docs/moved.html"  # the same host: followed
    site.redirects["/docs/changing.html"] = f"{other.url}/docs/changing.html"  # another port: not followed
    result = _run(_location(site, tmp_path), store, max_unavailable_share=0.5)
    assert _urls(store)["web:docs/busy.html"] == f"{site.url}/docs/moved.html"
    assert "web:docs/changing.html" in result.unavailable and "ASKFLOW_WEB_ALLOWED_HOSTS" in result.unavailable[
        "web:docs/changing.html"]
    assert other.requests == []  # not one request reached the other port

    allowed = f"127.0.0.1:{other.url.rsplit(':', 1)[1]}"
    result = _run(_location(site, tmp_path, allowed_hosts=(allowed,)), store)  # allowed: followed
    assert result.unavailable == {} and _urls(store)["web:docs/changing.html"] == f"{other.url}/docs/changing.html"
    assert [r["path"] for r in other.requests] == ["/robots.txt", "/docs/changing.html"]


def test_a_sitemap_never_leads_to_another_host_and_port(site, other, tmp_path):
    site.more_sitemaps = [f"{other.url}/sitemap-a.xml"]  # a child sitemap on another port
    with pytest.raises(SiteUnavailable, match=f"sitemap {other.url}/sitemap-a.xml: 127.0.0.1:\\d+, not a host"):
        _location(site, tmp_path).list()
    site.more_sitemaps = []
    site.redirects["/sitemap-b.xml"] = f"{other.url}/sitemap-b.xml"  # a sitemap redirecting to another port
    with pytest.raises(SiteUnavailable, match="not a host this location may fetch from"):
        _location(site, tmp_path).list()
    assert other.requests == []


def test_loopback_private_and_link_local_addresses_are_refused_unless_allowed(site, tmp_path):
    with pytest.raises(SiteUnavailable, match="127.0.0.1, a loopback address: refused"):
        _location(site, tmp_path, allowed_networks=()).list()
    assert site.requests == []  # refused before connecting
    for url, kind in [("http://169.254.169.254/sitemap.xml", "link-local"),  # the metadata server
                      ("http://[::ffff:169.254.169.254]/sitemap.xml", "link-local"),
                      ("http://[fe80::1]/sitemap.xml", "link-local"),
                      ("http://10.1.2.3/sitemap.xml", "private"), ("http://[fd00::1]/sitemap.xml", "private")]:
        location = WebsiteLocation.parse(url, cache_dir=tmp_path / "web", rate_limit_s=0, attempts=1, timeout_s=1,
                                         allowed_networks=("192.168.0.0/16",))  # other networks open nothing else
        with pytest.raises(SiteUnavailable, match=f"a {kind} address"):
            location.list()
    with pytest.raises(SiteUnavailable, match="loopback"):  # the allow-list holds networks, not host names
        _location(site, tmp_path, allowed_networks=("127.0.0.2/32",)).list()
    with pytest.raises(Exception, match="allowed network"):
        _location(site, tmp_path, allowed_networks=("loopback",))
    with pytest.raises(Exception, match="expected host:port"):
        _location(site, tmp_path, allowed_hosts=("docs.example.com",))


def test_a_canonical_link_is_cited_only_when_http_on_an_allowed_host(site, other, tmp_path):
    store = FakeVectorStore()
    main = '<h1 id="x">Canonical</h1><p>Which URL cites this page.</p>'
    site.pages["/docs/intro.html"] = page("Intro", main, canonical="javascript:alert(document.domain)")
    site.pages["/docs/changing.html"] = page("Changing", main, canonical=f"{other.url}/phishing.html")
    site.pages["/docs/busy.html"] = page("Busy", main, canonical="/docs/retries.html")  # the same host: cited
    site.sitemaps["/sitemap-a.xml"][0] = ("/docs/intro.html", None)
    _run(_location(site, tmp_path), store)
    urls = _urls(store)
    assert urls["web:docs/intro.html"] == f"{site.url}/docs/intro.html"
    assert urls["web:docs/changing.html"] == f"{site.url}/docs/changing.html"
    assert urls["web:docs/busy.html"] == f"{site.url}/docs/retries.html"
    assert urls["web:docs/guide/"] == f"{site.url}/docs/guide/"


def test_a_gzipped_sitemap_is_read_and_a_decompression_bomb_refused(site, tmp_path):
    store = FakeVectorStore()
    site.sitemaps["/sitemap-c.xml.gz"] = [("/docs/zipped.html", None)]
    site.pages["/docs/zipped.html"] = page("Zipped", '<h1 id="zipped">Zipped</h1><p>Listed by a gzipped sitemap, '
                                           'sent gzip-encoded.</p>')
    site.gzip_encoded.add("/docs/zipped.html")  # Content-Encoding: gzip, which httpx undoes
    _run(_location(site, tmp_path), store)
    assert set(store.document_fingerprints("web:")) == PAGES | {"web:docs/zipped.html"}
    assert "sent gzip-encoded" in " ".join(chunk.content for chunk, _ in store.stored.values())
    assert _location(site, tmp_path, start="/sitemap-c.xml.gz").list() == ["docs/zipped.html"]  # as the start

    site.files["/bomb.xml.gz"] = ("application/gzip", gzip.compress(b" " * 3_000_000))  # 3 MB from 3 kB
    with pytest.raises(SiteUnavailable, match="larger than 1048576 bytes once decompressed"):
        _location(site, tmp_path, start="/bomb.xml.gz", max_sitemap_bytes=2**20).list()


def test_pages_that_differ_by_their_query_are_two_documents_and_tracking_parameters_none(site, tmp_path):
    store = FakeVectorStore()
    for version in (1, 2):
        site.pages[f"/docs/api.html?version={version}"] = page(
            f"API {version}", f'<h1 id="api">API version {version}</h1><p>Calls of version {version}.</p>')
    site.sitemaps["/sitemap-b.xml"] += [("/docs/api.html?version=1", None), ("/docs/api.html?version=2", None),
                                        ("/docs/intro.html?utm_source=newsletter&utm_medium=email", None)]
    _run(_location(site, tmp_path), store)
    urls = _urls(store)
    assert set(urls) == PAGES | {"web:docs/api.html?version=1", "web:docs/api.html?version=2"}
    assert urls["web:docs/api.html?version=2"] == f"{site.url}/docs/api.html?version=2"
    texts = {chunk.doc_id: chunk.content for chunk, _ in store.stored.values()}
    assert "version 1" in texts["web:docs/api.html?version=1"] and "version 2" in texts["web:docs/api.html?version=2"]
    assert not [r for r in site.requests if "utm_" in r["path"]]  # the newsletter's link is the same page


def test_a_crawl_fetches_each_page_once(site, tmp_path):
    store = FakeVectorStore()
    site.busy_once.clear()
    site.pages["/docs/"] = page("Docs", '<h1 id="docs">Docs</h1><p>Everything about Acme.</p>' + "".join(
        f'<a href="{href}">{href}</a>' for href in ("intro.html", "guide/", "busy.html", "changing.html#schedules",
                                                    "changing.html?utm_source=docs", "private/secret.html",
                                                    "gone.html", "logo.png", "/elsewhere/")))
    site.pages["/docs/guide/"] = page("Guide", '<h1 id="guide">Guide</h1><p>Pipelines, <a href="deep.html">in '
                                      'depth</a>.</p>')
    site.pages["/docs/guide/deep.html"] = page("Deep", '<h1 id="deep">In depth</h1><p>Only the guide links here.</p>')
    pages = {"/docs/", "/docs/intro.html", "/docs/guide/", "/docs/guide/deep.html", "/docs/busy.html",
             "/docs/changing.html"}
    crawled = {"web:docs/", "web:docs/guide/deep.html"} | PAGES
    _run(_location(site, tmp_path, start="/docs/"), store)
    assert set(store.document_fingerprints("web:")) == crawled
    fetched = Counter(r["path"] for r in site.requests)
    assert fetched == Counter(pages | {"/robots.txt", "/docs/gone.html"})  # each once, listing and loading

    site.requests.clear()
    site.failing["/docs/guide/"] = 403  # the only way to deep.html
    result = _run(_location(site, tmp_path, start="/docs/"), store, max_unavailable_share=0.5)
    assert result.documents_written == 0 and list(result.unavailable) == ["web:docs/guide/"]
    assert set(store.document_fingerprints("web:")) == crawled  # the 403 page kept, and what it links to
    assert Counter(r["path"] for r in site.requests) == Counter(pages | {"/robots.txt", "/docs/gone.html"})
    assert all("If-None-Match" in r["headers"] for r in site.requests if r["path"] in pages - {"/docs/guide/"})


def test_a_crawl_that_reaches_its_page_limit_prunes_nothing(site, tmp_path):
    """A review's case: new links (``?sort=N`` pages, say) push pages already stored past the limit; a listing cut
    short would prune them, so the run fails and keeps what is stored."""
    from askflow.adapters.web_documents import SiteUnavailable

    store = FakeVectorStore()
    site.busy_once.clear()
    site.pages["/docs/"] = page("Docs", '<h1 id="docs">Docs</h1><a href="intro.html">intro</a>')
    _run(_location(site, tmp_path, start="/docs/"), store)
    before = set(store.document_fingerprints("web:"))
    assert {"web:docs/", "web:docs/intro.html"} <= before
    for n in range(12):
        site.pages[f"/docs/p{n}.html"] = page(f"P{n}", f'<h1 id="p{n}">Page {n}</h1><p>Listing {n}.</p>')
    site.pages["/docs/"] = page("Docs", '<h1 id="docs">Docs</h1>' + "".join(
        f'<a href="p{n}.html">page {n}</a>' for n in range(12)) + '<a href="intro.html">intro</a>')
    with pytest.raises(SiteUnavailable, match="MAX_PAGES"):
        _run(_location(site, tmp_path, start="/docs/", max_pages=5), store)
    assert set(store.document_fingerprints("web:")) == before


def _batches_through_xcom(location: WebsiteLocation, size: int = 2) -> list[dict]:
    """What the docs DAG's list task hands its mapped index tasks, through XCom (JSON)."""
    pinned, paths, listed = list_documents(location)
    return json.loads(json.dumps([{"location": pinned, "paths": batch, "listed": {p: listed[p] for p in batch}}
                                  for batch in batches(paths, size)]))


def _index_on(location: WebsiteLocation, batch: dict, store: FakeVectorStore) -> dict:
    return index_batch(location, batch["paths"], store=store, embeddings=HashEmbeddings(), strategy=ChunkingStrategy(),
                       source="web", listed=batch["listed"])


def _texts(store: FakeVectorStore, doc_id: str) -> str:
    return " ".join(chunk.content for chunk, _ in store.stored.values() if chunk.doc_id == doc_id)


def test_a_batch_on_another_worker_loads_by_this_runs_sitemap_not_by_one_it_kept(site, tmp_path):
    """Worker B listed and loaded the last run; this run worker A lists and B loads: B goes by this run's listing
    (intro.html's new lastmod), not by the one it listed itself."""
    store, worker_b = FakeVectorStore(), tmp_path / "b"
    for batch in _batches_through_xcom(_location(site, worker_b)):
        _index_on(_location(site, worker_b), batch, store)
    assert "Install the acme package" in _texts(store, "web:docs/intro.html")

    site.pages["/docs/intro.html"] = page("Introduction", '<h1 id="introduction">Introduction</h1><p>Acme '
                                          'pipelines now stream data between warehouses continuously.</p>')
    site.sitemaps["/sitemap-a.xml"][0] = ("/docs/intro.html", "2026-02-01")
    for batch in _batches_through_xcom(_location(site, tmp_path / "a")):
        _index_on(_location(site, worker_b), batch, store)
    assert "now stream data" in _texts(store, "web:docs/intro.html")
    assert "Install the acme package" not in _texts(store, "web:docs/intro.html")


def test_a_batch_on_another_worker_never_replays_a_failure_of_an_earlier_crawl(site, tmp_path):
    """Worker B crawled the last run, when busy.html answered 403; this run it reads, worker A crawls and B loads:
    the page is read, not reported unavailable again from what B's own crawl found."""
    store, worker_b = FakeVectorStore(), tmp_path / "b"
    site.busy_once.clear()
    site.pages["/docs/"] = page("Docs", '<h1 id="docs">Docs</h1><a href="intro.html">intro</a>'
                                '<a href="busy.html">busy</a>')
    site.failing["/docs/busy.html"] = 403
    first = [_index_on(_location(site, worker_b, start="/docs/"), batch, store)
             for batch in _batches_through_xcom(_location(site, worker_b, start="/docs/"))]
    assert [doc_id for result in first for doc_id in result["unavailable"]] == ["web:docs/busy.html"]

    del site.failing["/docs/busy.html"]
    again = [_index_on(_location(site, worker_b, start="/docs/"), batch, store)
             for batch in _batches_through_xcom(_location(site, tmp_path / "a", start="/docs/"))]
    assert all(result["unavailable"] == {} for result in again)
    assert "Acme retries a failed step" in _texts(store, "web:docs/busy.html")
