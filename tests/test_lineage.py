"""Lineage on the real Firestore emulator and Postgres: an answer names the versions and ingestion runs of its sources
and says when a re-ingested change replaced one; a document names the answers that drew on it and which verified
answers a change voided; a cached answer's lineage is its original's; deleting a request removes what was derived
from it, and deleting it again finds nothing left."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from askflow.adapters.pgvector_learned import PgLearnedSignals
from askflow.adapters.pgvector_store import PgVectorStore
from askflow.bootstrap import Components
from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.messages import GradingDue
from askflow.domain.model import ASKER_RATER, Rating, Request, token_sha
from askflow.ingest.indexing import index_documents
from askflow.ingest.provenance import airflow_run
from askflow.ingest.sources.files import load_paths
from askflow.service_layer.evaluation import grade_events
from askflow.service_layer.lineage import delete_request
from tests.test_cli import askflow

DOCS = Path(__file__).parent / "data" / "docs"
QUESTION = "How do tasks pull an XCom value from another task?"
XCOMS = "docs:xcoms.rst"


@pytest.fixture
def loop(local_stack, pg_url, minilm, collection_name, wire, tmp_path):
    """A docs folder of its own (to edit), the production answerer over it (a loopback model), requests in the
    Firestore emulator, what grading learns into, and the CLI's environment over the same stores."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    requests_collection = f"lineage_{uuid.uuid4().hex[:8]}"
    settings = Settings(database_url=pg_url, collection=collection_name, learned_collection=f"{collection_name}_l",
                        requests_collection=requests_collection, project_id="askflow-test",
                        openai_base_url=wire.base_url, openai_api_key="test-key", cheap_model="loopback-cheap",
                        strong_model="loopback-strong", llm_backoff_max_s=0.1, cache_threshold=0.8)
    components = Components(settings)
    store = PgVectorStore(url=pg_url, collection=collection_name)
    signals = PgLearnedSignals(url=pg_url, table=settings.learned_collection)
    requests = components.requests

    class Loop:
        env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name,
               "ASKFLOW_LEARNED_COLLECTION": settings.learned_collection,
               "ASKFLOW_REQUESTS_COLLECTION": requests_collection, "ASKFLOW_PROJECT_ID": "askflow-test"}
        answerer = components.answerer_for(store, minilm, collection=collection_name, signals=signals,
                                           requests=lambda: requests)

        @staticmethod
        def cli(*args: str):
            return askflow(*args, env=Loop.env)

        @staticmethod
        def asked(question: str = QUESTION) -> Request:
            """A request answered by the production answerer, stored, and rated up by its asker."""
            request_id, now = uuid.uuid4().hex[:12], utcnow()
            answer = Loop.answerer.answer(question)
            requests.create(Request(request_id=request_id, question=question, created_at=now,
                                    asker_sha=token_sha(request_id)).completed(answer, at=now))
            requests.rate(request_id, ASKER_RATER, Rating(positive=True, at=now))
            return requests.get(request_id)

        @staticmethod
        def grade(*request_ids: str) -> None:
            events = [GradingDue(request_id=r, revision=requests.get(r).revision()) for r in request_ids]
            from askflow.adapters.memory import InMemoryEvaluationRuns

            grade_events(events, requests=requests, runs=InMemoryEvaluationRuns(), store=store, embeddings=minilm,
                         grader=components.grader, strategy=components.strategy(), answers_source="answers",
                         answers_base_url="/requests", batch_size=2, signals=signals, collection=collection_name)

        @staticmethod
        def lineage(*args: str) -> dict:
            result = Loop.cli("lineage", *args, "--format", "json")
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

    Loop.docs, Loop.store, Loop.signals, Loop.requests, Loop.components = docs, store, signals, requests, components
    Loop.minilm = minilm
    yield Loop
    signals.close()
    store.close()


def _cited(report: dict, doc_id: str) -> dict:
    return next(source for source in report["sources"] if source["doc_id"] == doc_id and source["cited"])


def test_an_answers_lineage_shows_the_version_and_run_it_drew_on_and_a_change_voids_its_verified_answer(loop):
    ingested = loop.cli("ingest", str(loop.docs), "--source", "docs")
    assert ingested.returncode == 0, ingested.stderr
    first = loop.store.document_chunks(XCOMS, audiences=None)[0].provenance
    assert first.run.startswith("cli:") and first.location == str(loop.docs.resolve())
    assert first.version.startswith("mtime ") and "; sha256 " in first.version
    original = loop.asked()
    assert XCOMS in {s.doc_id for s in original.sources if s.cited}
    loop.grade(original.request_id)
    assert loop.requests.get(original.request_id).verified

    before = loop.lineage(original.request_id)
    cited = _cited(before, XCOMS)
    assert (cited["version"], cited["run"], cited["location"], cited["state"]) == (
        first.version, first.run, first.location, "current")
    assert all(source["state"] == "current" for source in before["sources"])

    (loop.docs / "xcoms.rst").write_text((loop.docs / "xcoms.rst").read_text() + "\n\nEdited since.\n")
    reingested = loop.cli("ingest", str(loop.docs), "--source", "docs")
    assert reingested.returncode == 0, reingested.stderr
    assert json.loads(reingested.stdout.strip().splitlines()[-1])["answers_invalidated"] == 1
    now = loop.store.document_chunks(XCOMS, audiences=None)[0].provenance
    assert now.run != first.run and now.version != first.version

    after = loop.lineage(original.request_id)
    cited = _cited(after, XCOMS)
    assert (cited["version"], cited["run"], cited["state"]) == (first.version, first.run, "no longer current")
    assert (cited["now"]["version"], cited["now"]["run"]) == (now.version, now.run)
    assert {s["state"] for s in after["sources"] if s["doc_id"] != XCOMS} == {"current"}  # the others unchanged
    table = loop.cli("lineage", original.request_id)
    assert table.returncode == 0, table.stderr
    assert "no longer current" in table.stdout and first.version in table.stdout and first.run in table.stdout

    document = loop.lineage("--document", XCOMS)
    assert document["now"]["run"] == now.run
    item = next(r for r in document["requests"] if r["request_id"] == original.request_id)
    assert (item["verified"], item["voided"], item["state"], item["version"]) == (
        True, True, "no longer current", first.version)
    listed = loop.cli("lineage", "--document", XCOMS)
    assert original.request_id in listed.stdout and "verified answer voided by a change" in listed.stdout
    assert loop.answerer.answer(QUESTION).mode == "llm"  # voided: not served again

    unknown = loop.cli("lineage", "no-such-request")
    assert unknown.returncode == 2 and "askflow: no request no-such-request" in unknown.stderr
    nowhere = loop.cli("lineage", "--document", "docs:never-indexed.md")
    assert nowhere.returncode == 2 and "askflow: no document docs:never-indexed.md" in nowhere.stderr


def test_a_cached_answers_lineage_names_the_original_answers_sources(loop):
    run = airflow_run({"dag_run": SimpleNamespace(dag_id="askflow_ingest_docs"), "run_id": "manual__2026-12-01",
                       "ti": SimpleNamespace(task_id="index", map_index=0)})
    assert run == "airflow:askflow_ingest_docs/manual__2026-12-01/index[0]"
    index_documents(load_paths([loop.docs], source="docs"), store=loop.store, embeddings=loop.minilm,
                    strategy=loop.components.strategy(), source="docs", run=run)
    original = loop.asked()
    loop.grade(original.request_id)
    served = loop.asked()
    assert served.mode == "cached" and served.cached_from == original.request_id
    assert served.lineage.origin == original.request_id
    assert served.lineage.sources == original.lineage.sources and served.lineage.sources
    assert served.cited_docs == original.cited_docs

    report = loop.lineage(served.request_id)
    assert report["origin"] == original.request_id
    assert [(s["doc_id"], s["run"]) for s in report["sources"]] == [(s.doc_id, run) for s in original.lineage.sources]
    assert served.request_id in {r["request_id"] for r in loop.lineage("--document", XCOMS)["requests"]}


def test_deleting_a_request_removes_its_stored_answer_cache_entry_learned_record_and_feed_item(loop):
    index_documents(load_paths([loop.docs], source="docs"), store=loop.store, embeddings=loop.minilm,
                    strategy=loop.components.strategy(), source="docs")
    original = loop.asked()
    loop.grade(original.request_id)
    stored_answer = f"answers:{original.request_id}"
    assert loop.store.fingerprints([stored_answer])
    assert original.request_id in {r.request_id for r in loop.signals.citing(original.cited_docs)}
    assert original.request_id in {r.request_id for r in loop.requests.recent_good(50)}
    assert loop.answerer.answer(QUESTION).cached_from == original.request_id

    deleted = loop.cli("delete-request", original.request_id)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted request" in deleted.stdout and "the verified answer the cache served" in deleted.stdout
    assert loop.requests.get(original.request_id) is None
    assert loop.store.fingerprints([stored_answer]) == {}
    assert original.request_id not in {r.request_id for r in loop.signals.citing(original.cited_docs)}
    assert original.request_id not in {r.request_id for r in loop.requests.recent_good(50)}
    assert loop.answerer.answer(QUESTION).mode == "llm"  # no cache entry left

    again = loop.cli("delete-request", original.request_id)
    assert again.returncode == 0 and "nothing left" in again.stdout

    # a deletion that stopped half-way (the request's own delete failed) is finished by running it again
    second = loop.asked()
    loop.grade(second.request_id)

    class Failing:
        def get(self, request_id):
            return loop.requests.get(request_id)

        def cached_copies(self, request_id):
            return loop.requests.cached_copies(request_id)

        def delete(self, request_id):
            raise ConnectionError("Firestore went away")

    with pytest.raises(ConnectionError):
        delete_request(second.request_id, requests=Failing(), stores=[loop.store], signals=loop.signals,
                       answers_source="answers")
    assert loop.store.fingerprints([f"answers:{second.request_id}"]) == {}
    assert loop.requests.get(second.request_id) is not None
    finished = loop.cli("delete-request", second.request_id)
    assert finished.returncode == 0 and "request deleted" in finished.stdout
    assert loop.requests.get(second.request_id) is None


def test_a_team_answers_lineage_names_who_answered_for_the_request_and_the_requests_joined_to_it():
    """The service layer on the in-memory ports (the request-store contract holds both stores to the same rules): a
    team's answer rests on no source; the request it was given on, and one that joined its escalation, say so."""
    import datetime as dt

    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.domain.model import Answer, Escalation, Source, SourceOrigin, TeamAnswer
    from askflow.service_layer.lineage import request_lineage
    from tests.fakes import FakeVectorStore

    requests, now = InMemoryRequestStore(), utcnow()
    source = Source(n=1, title="XComs", url="https://example.org/xcoms", doc_id=XCOMS,
                    origin=SourceOrigin(sha="gone-since", version="commit 1", run="cli:run-1"))
    answer = Answer(text="The sources do not cover it.", sources=[source], mode="llm", queries=[QUESTION], usage=[],
                    timings_ms={})
    team = TeamAnswer(text="Use xcom_pull.", by="U1", marked_by="U2", at=now, ts="2.2")
    for request_id, escalation in (("asked", Escalation(state="answered", why="not sure", asked_at=now,
                                                        answer=team)),
                                   ("joined", Escalation(state="joined", why="not sure", asked_at=now,
                                                         joined="asked"))):
        requests.create(Request(request_id=request_id, question=QUESTION, created_at=now + dt.timedelta(seconds=1))
                        .completed(answer, at=now).model_copy(update={"escalation": escalation}))
    for request_id in ("asked", "joined"):
        report = request_lineage(request_id, requests=requests, store=FakeVectorStore())
        assert report.team_answer is not None and (report.team_answer.request_id, report.team_answer.by) == (
            "asked", "U1")
        assert [(s.doc_id, s.version, s.state) for s in report.sources] == [(XCOMS, "commit 1", "gone")]


def test_the_admin_pages_show_a_requests_lineage_and_a_documents_linked_from_each_request(loop):
    from askflow.entrypoints import admin_api
    from tests.test_audiences import _http

    index_documents(load_paths([loop.docs], source="docs"), store=loop.store, embeddings=loop.minilm,
                    strategy=loop.components.strategy(), source="docs", run="cli:admin-page-run")
    asked = loop.asked()
    settings = Settings(api_key="admin-key", api_keys=[{"name": "staff", "key": "staff-key"}],
                        project_id="askflow-test")
    components = SimpleNamespace(settings=settings, requests=loop.requests, store=loop.store)
    admin = {"X-API-Key": "admin-key"}

    status, body = _http(admin_api.handle, components, "/admin", admin)
    assert status == 200 and f"/admin/lineage/{asked.request_id}" in body  # each request links to its lineage
    status, body = _http(admin_api.handle, components, f"/admin/lineage/{asked.request_id}", admin)
    cited = next(s for s in asked.lineage.sources if s.doc_id == XCOMS)
    assert status == 200 and "cli:admin-page-run" in body and cited.version in body and "current" in body
    assert "/admin/lineage?document=docs%3Axcoms.rst" in body
    status, body = _http(admin_api.handle, components, "/admin/lineage?document=docs%3Axcoms.rst", admin)
    assert status == 200 and asked.request_id in body and "not verified" in body
    for path in (f"/admin/lineage/{asked.request_id}", "/admin/lineage?document=docs%3Axcoms.rst"):
        assert _http(admin_api.handle, components, path)[0] == 401
        assert _http(admin_api.handle, components, path, {"X-API-Key": "staff-key"})[0] == 403  # not an admin
    status, body = _http(admin_api.handle, components, "/admin/lineage/no-such-request", admin)
    assert status == 404 and "no request no-such-request" in body
    assert _http(admin_api.handle, components, "/admin/lineage?request=x", admin)[0] == 400


def test_each_location_names_the_version_it_read(git_docs, gcs_server, tmp_path):
    """What each location says a document's version is: a git commit, a GCS object's generation, a website page's
    validators; a Slack thread's latest reply and a GitHub issue's update time come from their metadata."""
    from google.cloud import storage

    from askflow.adapters.web_documents import page_version
    from askflow.domain.model import Chunk, Document
    from askflow.ingest.provenance import document_version, stamped
    from tests.support.git_repo import git
    from tests.test_ingestion import open_location

    location = open_location(f"git+{git_docs.as_uri()}@main#subdirectory=docs", cache_dir=tmp_path / "cache")
    document = location.load("xcoms.rst", source="docs", base_url=None)
    assert document.version == f"commit {git(git_docs, 'rev-parse', 'HEAD')}"
    assert document.location == f"git+{git_docs.as_uri()}@main#subdirectory=docs"

    bucket = storage.Client().create_bucket(f"docs-{uuid.uuid4().hex[:8]}")
    blob = bucket.blob("site/xcoms.rst")
    blob.upload_from_filename(DOCS / "xcoms.rst")
    loaded = open_location(f"gs://{bucket.name}/site").load("xcoms.rst", source="docs", base_url=None)
    assert loaded.version == f"generation {bucket.get_blob('site/xcoms.rst').generation}"
    assert loaded.location == f"gs://{bucket.name}/site/"

    assert page_version({"etag": '"abc"', "last_modified": "Tue, 01 Dec 2026 08:00:00 GMT"}) == \
        'etag "abc"; last-modified Tue, 01 Dec 2026 08:00:00 GMT'
    assert page_version({"version": "2026-11-30"}) == "lastmod 2026-11-30"
    thread = Document(doc_id="slack:C1/1.1", text="t", title="t", url="u", metadata={"latest_reply": "1.9"})
    issue = Document(doc_id="github:o/r/1", text="t", title="t", url="u", metadata={"updated_at": "2026-12-01"})
    plain = Document(doc_id="docs:x.md", text="t", title="t", url="https://example.org/x")
    assert [document_version(d) for d in (thread, issue)] == ["latest_reply 1.9", "updated_at 2026-12-01"]
    assert document_version(plain) == f"sha256 {plain.sha[:16]}"
    chunk = Chunk(doc_id="docs:x.md", index=0, content="t", title="t", section="", url=plain.url, sha="s")
    (traced,) = stamped([chunk], plain, run="cli:r", at=utcnow(), location=None)
    assert (traced.provenance.location, traced.provenance.run, traced.chunk_id) == (plain.url, "cli:r", chunk.chunk_id)


# -- the service layer on the in-memory ports (the request-store contract holds both stores to the same rules) ------
SLACK_DOC = "slack:C1-1700000000.000100"


def _slack_chunk(sha: str, text: str):
    from askflow.domain.model import Chunk, Provenance, SourceKind

    return Chunk(doc_id=SLACK_DOC, index=0, content=text, title="thread", section="", url="https://x.slack.com/t",
                 sha=sha, kind=SourceKind.SLACK,
                 provenance=Provenance(location="slack:C1", version="latest_reply 1700000500.000200",
                                       ingested_at=utcnow(), run="cli:r1"))


def _answered_from(chunk, request_id: str, **extra) -> Request:
    from askflow.domain.model import Answer, Source, SourceOrigin

    now = utcnow()
    source = Source(n=1, title="thread", url=chunk.url, doc_id=chunk.doc_id, kind="slack",
                    origin=SourceOrigin.of(chunk))
    answer = Answer(text="Use xcom_pull [1].", sources=[source], mode="llm", queries=["q"], usage=[],
                    timings_ms={}, **extra)
    return Request(request_id=request_id, question="How do I pull an XCom?", created_at=now).completed(answer, at=now)


def test_a_changed_fingerprint_is_no_longer_current_whatever_the_version_string_says():
    """A source is current only at the fingerprint it was cited at, as the cache decides: an edited Slack reply keeps
    its thread's ``latest_reply`` (the version string), yet its content changed, and the verified answer it voided is
    reported voided."""
    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.domain.model import LearnedAnswer
    from askflow.learning.votes import still_valid
    from askflow.service_layer.lineage import document_lineage, request_lineage
    from tests.fakes import FakeVectorStore

    store, requests = FakeVectorStore(), InMemoryRequestStore()
    old = _slack_chunk("sha-old", "use xcom_pull")
    store.upsert([old], [[1.0]])
    requests.create(_answered_from(old, "req1").model_copy(update={"verified": True}))
    store.delete_documents([SLACK_DOC])
    store.upsert([_slack_chunk("sha-new", "do NOT use xcom_pull")], [[1.0]])  # same version string, new content

    assert still_valid([LearnedAnswer.model_construct(request_id="req1", cited={SLACK_DOC: "sha-old"})], store) == []
    assert request_lineage("req1", requests=requests, store=store).sources[0].state == "no longer current"
    (item,) = document_lineage(SLACK_DOC, requests=requests, store=store).requests
    assert (item.state, item.verified, item.voided) == ("no longer current", True, True)


class _Learned:
    """What grading learns, by request id (the two calls ``apply_verdicts`` and ``delete_request`` make)."""

    def __init__(self) -> None:
        self.records: set[str] = set()

    def record(self, answers, vectors) -> None:
        self.records |= {answer.request_id for answer in answers}

    def forget(self, request_ids) -> int:
        gone = self.records & set(request_ids)
        self.records -= gone
        return len(gone)


def test_a_request_deleted_while_a_grading_run_writes_its_answer_back_leaves_no_stored_answer_nor_record():
    """A grading run reads a request, then writes its stored answer and learned record; a deletion removes those,
    then the request, then them again. Whichever lands last removes what the other left: the write-back landing
    between the deletion's steps is removed by its second pass, one landing after the whole deletion is undone by the
    run itself (it reads the request again after writing)."""
    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.domain.model import Grade, Graded
    from askflow.ingest.chunking import ChunkingStrategy
    from askflow.service_layer.evaluation import Verdict, _write_back, apply_verdicts
    from tests.fakes import FakeVectorStore, HashEmbeddings

    def setup(request_id: str):
        store, requests, learned = FakeVectorStore(), InMemoryRequestStore(), _Learned()
        chunk = _slack_chunk("sha", "use xcom_pull")
        store.upsert([chunk], [[1.0] * HashEmbeddings().dimension])
        requests.create(_answered_from(chunk, request_id).model_copy(update={"verified": True}))
        return store, requests, learned

    # the write-back lands between the deletion's derived items and the request
    store, requests, learned = setup("between")
    read_by_grader, real_delete = requests.get("between"), requests.delete

    def delete(request_id):
        _write_back([read_by_grader], [], store=store, embeddings=HashEmbeddings(), strategy=ChunkingStrategy(),
                    answers_source="answers", answers_base_url="/requests", fingerprints={SLACK_DOC: "sha"})
        learned.records.add(request_id)
        return real_delete(request_id)

    requests.delete = delete
    delete_request("between", requests=requests, stores=[store], signals=learned, answers_source="answers")
    assert requests.get("between") is None
    assert store.fingerprints(["answers:between"]) == {} and learned.records == set()

    # the whole deletion lands after the grading run read the request, before it writes
    store, requests, learned = setup("after")
    request = requests.get("after")
    graded = Graded(grade=Grade(helpfulness=5, relevance=5, public=True, method="test", reason="fine"),
                    is_good=True, grade_reason="fine", graded_at=utcnow(), graded_revision=request.revision(),
                    verified=True, verified_by="grader")
    real_ensure = store.ensure_collection

    def ensure_collection(dimension):  # apply_verdicts: after it read the requests, before it writes
        delete_request("after", requests=requests, stores=[store], signals=learned, answers_source="answers")
        real_ensure(dimension)

    store.ensure_collection = ensure_collection
    apply_verdicts([Verdict(request_id="after", graded=graded)], requests=requests, store=store,
                   embeddings=HashEmbeddings(), strategy=ChunkingStrategy(), answers_source="answers",
                   answers_base_url="/requests", signals=learned)
    assert requests.get("after") is None
    assert store.fingerprints(["answers:after"]) == {} and learned.records == set()


def test_deleting_a_request_deletes_the_cached_copies_of_its_answer():
    """A request the cache served a verified answer to is a copy of that answer (``cached_from``; its lineage's
    ``origin``): deleting the original deletes it too (its stored answer, its learned record, the request and its
    feed item), and the copies of that copy; the deletion names them."""
    from askflow.adapters.memory import InMemoryRequestStore
    from tests.fakes import FakeVectorStore

    store, requests, learned = FakeVectorStore(), InMemoryRequestStore(), _Learned()
    chunk = _slack_chunk("sha", "use xcom_pull")
    store.upsert([chunk], [[1.0]])
    original = _answered_from(chunk, "orig").model_copy(update={"verified": True})
    requests.create(original)
    served = _answered_from(chunk, "served", cached_from="orig", readers=["public"]).model_copy(
        update={"verified": True})
    again = _answered_from(chunk, "again", cached_from="served").model_copy(update={"verified": True})
    other = _answered_from(chunk, "other")
    for request in (served, again, other):
        requests.create(request)
    assert served.lineage.origin == "orig" and served.in_feed
    assert [r.request_id for r in requests.cached_copies("orig")] == ["served"]
    learned.records |= {"orig", "served", "again", "other"}

    deletion = delete_request("orig", requests=requests, stores=[store], signals=learned, answers_source="answers")
    assert sorted(deletion.cached_copies) == ["again", "served"] and deletion.request
    assert [requests.get(r) for r in ("orig", "served", "again")] == [None, None, None]
    assert requests.get("other") is not None and learned.records == {"other"}
    assert [r.request_id for r in requests.recent_good(20) if r.answer == original.answer] == []
    assert delete_request("orig", requests=requests, stores=[store], signals=learned,
                          answers_source="answers").nothing_left


def test_delete_request_deletes_the_stored_answer_in_the_collection_the_request_was_answered_from(monkeypatch):
    """After a fine-tuning promotion moved serving to another collection, a request answered from the earlier one has
    its stored answer there too: `askflow delete-request` deletes it from both."""
    import contextlib

    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.domain.model import Chunk, SourceKind
    from askflow.entrypoints import cli
    from tests.fakes import FakeVectorStore

    old, serving, requests = FakeVectorStore(), FakeVectorStore(), InMemoryRequestStore()
    request = _answered_from(_slack_chunk("sha", "use xcom_pull"), "orig").model_copy(
        update={"verified": True, "collection": "askflow_old"})
    requests.create(request)
    stored = Chunk(doc_id="answers:orig", index=0, content=request.answer, title="Verified answer", section="",
                   url="/requests/orig", sha="a", kind=SourceKind.ANSWERED_QUESTION)
    for store in (old, serving):
        store.upsert([stored], [[1.0]])
    opened = []
    components = SimpleNamespace(requests=requests, store=serving, signals=None,
                                 settings=SimpleNamespace(answers_source="answers"),
                                 serving=lambda: SimpleNamespace(collection="askflow_new"),
                                 vector_store=lambda name: opened.append(name) or old)

    @contextlib.contextmanager
    def bootstrap():
        yield components

    monkeypatch.setattr("askflow.bootstrap.bootstrap", bootstrap)
    assert cli.main(["delete-request", "orig"]) == 0
    assert serving.fingerprints(["answers:orig"]) == {} and old.fingerprints(["answers:orig"]) == {}
    assert opened == ["askflow_old"]


def test_askflow_lineage_shows_the_control_characters_of_a_question_as_escapes():
    """A question is anyone's (``POST /requests`` takes ESC and newlines): the lineage tables show every control
    character as an escape and a newline as a mark, so no escape sequence (a screen clear, an OSC 8 link) reaches the
    admin's terminal and no line of the table is forged."""
    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.entrypoints.cli import _document_table, _request_table
    from askflow.service_layer.commands import AskQuestion
    from askflow.service_layer.lineage import document_lineage, request_lineage
    from tests.fakes import FakeVectorStore

    evil = ("How do XComs work?\x1b[2J\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07\x9b2J\u202e"
            "\n  [1] docs:xcoms.rst — XComs\n      current")
    AskQuestion(question=evil)  # the API takes it
    store, requests = FakeVectorStore(), InMemoryRequestStore()
    chunk = _slack_chunk("sha", "use xcom_pull")
    store.upsert([chunk], [[1.0]])
    requests.create(_answered_from(chunk, "req1").model_copy(update={"question": evil}))
    for table in (_request_table(request_lineage("req1", requests=requests, store=store)),
                  _document_table(document_lineage(SLACK_DOC, requests=requests, store=store))):
        assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in table)
        assert "\\x1b[2J\\x1b]8;;https://evil.example/\\x07click" in table and "\\x9b2J\\u202e" in table
        assert "⏎  [1] docs:xcoms.rst — XComs⏎      current" in table
        assert not any(line.startswith("  [1] docs:xcoms.rst") for line in table.splitlines())


def test_a_document_id_with_a_nul_a_lone_surrogate_or_past_1500_bytes_is_bad_input_not_a_store_error(pg_url,
                                                                                                     monkeypatch):
    """``/admin/lineage?document=`` and ``askflow lineage --document`` ask the stores about what they are given:
    a NUL (Postgres refuses it in text: an HTTP 500), a lone surrogate (no UTF-8) or an id past 1,500 bytes (past
    what Firestore indexes) is a 400 / an ``askflow: ...`` error (exit 2) before any query."""
    import contextlib

    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.domain.errors import InvalidInput, NotFound
    from askflow.entrypoints import admin_api, cli
    from askflow.service_layer.lineage import document_lineage
    from tests.test_audiences import _http

    store = PgVectorStore(url=pg_url, collection=f"lineage_{uuid.uuid4().hex[:8]}")
    store.ensure_collection(8)
    components = SimpleNamespace(settings=Settings(api_key="admin-key", project_id="askflow-test"),
                                 requests=InMemoryRequestStore(), store=store)
    try:
        status, body = _http(admin_api.handle, components, "/admin/lineage?document=docs:a%00b",
                             {"X-API-Key": "admin-key"})
        assert status == 400 and "NUL" in body, (status, body)
        for bad in ("docs:a\udc80b", "docs:" + "é" * 750):
            with pytest.raises(InvalidInput):
                document_lineage(bad, requests=components.requests, store=store)
        with pytest.raises(NotFound):  # within the limit: asked, and not found
            document_lineage("docs:" + "é" * 740, requests=components.requests, store=store)

        @contextlib.contextmanager
        def bootstrap():
            yield components

        monkeypatch.setattr("askflow.bootstrap.bootstrap", bootstrap)
        assert cli.main(["lineage", "--document", "docs:a\udc80b"]) == 2
    finally:
        store.close()
