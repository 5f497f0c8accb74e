"""A documentation website as a source: a loopback site (sitemap index, two sitemaps, chrome around the content, a
404, a 429 with Retry-After, robots.txt, a page changed between runs) ingested by `askflow ingest` and by the docs
DAG under dag.test()."""

from __future__ import annotations

import json

import pytest

from askflow.adapters.pgvector_store import PgVectorStore
from askflow.service_layer.links import passage_link
from tests.support.dag_runner import dag_env, run_dag
from tests.support.loopback_site import LoopbackSite, page
from tests.test_cli import askflow

PAGES = {"web:docs/intro.html", "web:docs/guide/", "web:docs/busy.html", "web:docs/changing.html"}


@pytest.fixture
def site():
    served = LoopbackSite()
    yield served
    served.stop()


def _ingest(site: LoopbackSite, env: dict[str, str], sitemap: str = "/sitemap_index.xml"):
    result = askflow("ingest", f"{site.url}{sitemap}", "--source", "web", env=env)
    return result, (json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None)


def test_a_site_is_ingested_politely_then_incrementally(site, pg_url, collection_name, tmp_path):
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name, "ASKFLOW_DATA_DIR": str(tmp_path),
           "ASKFLOW_WEB_RATE_LIMIT_S": "0"}
    store = PgVectorStore(url=pg_url, collection=collection_name)

    first, summary = _ingest(site, env)
    assert first.returncode == 0, first.stderr
    assert set(store.document_fingerprints("web:")) == PAGES  # the 404, the image and the disallowed page: out
    assert not site.fetched("/docs/private/secret.html") and not site.fetched("/docs/logo.png")
    busy = site.fetched("/docs/busy.html")
    assert len(busy) == 2 and busy[1]["at"] - busy[0]["at"] >= 1.0  # the 429's Retry-After was waited for
    assert all(r["headers"]["User-Agent"].startswith("askflow-docs/") for r in site.requests)
    intro = [c for c in store.keyword_search("install acme package pip", limit=10)
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
    env = dag_env(airflow_env, pg_url, wire, collection_name, data_dir=tmp_path, web_rate_limit_s=0)
    conf = {"docs_location": f"{site.url}/sitemap_index.xml", "source": "web", "collection": collection_name,
            "batch_size": 2}
    assert run_dag("askflow_ingest_docs.py", conf, env) == "success"
    store = PgVectorStore(url=pg_url, collection=collection_name)
    assert set(store.document_fingerprints("web:")) == PAGES
    store.close()
