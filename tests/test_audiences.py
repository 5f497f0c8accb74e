"""Audiences: every source and every answer knows who may see it, and no answer crosses that line.

A loopback Slack workspace with a public channel and a private one (two members, one of them also in the public
channel) feeds the ask path on fakes of the stores; the filter inside the real pgvector queries, the CLI, API keys
and IAP assertions are tested on the real parts."""

from __future__ import annotations

import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import pytest

from askflow.adapters.memory import InMemoryRequestStore
from askflow.adapters.slack_audiences import SlackAudiences
from askflow.config import Settings
from askflow.domain.audiences import ADMIN, PUBLIC, PUBLIC_VIEWER, Viewer, readers_of
from askflow.domain.clock import utcnow
from askflow.domain.messages import QuestionQueued
from askflow.domain.model import Approval, Chunk, Document, Grade, SlackThread, SourceKind
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.retrieval.retriever import Retriever
from askflow.service_layer import handlers
from askflow.service_layer.answering import Answerer
from askflow.service_layer.commands import AskQuestion
from tests.fakes import FakeEventBus, FakeVectorStore, HashEmbeddings
from tests.support.loopback import LoopbackServer
from tests.support.loopback_apis import LoopbackAPI, SlackAPI

SECRET_WORDS = "The vault rotation passphrase lives in the zebra-orchid runbook"
PRIVATE, PUBLIC_CHANNEL, DM_MEMBER, DM_OUTSIDER, GROUP_DM = "CPRIV", "CPUB", "DMEM", "DOUT", "GMIX"


class Workspace(SlackAPI):
    """The loopback Slack API with a workspace's membership: ``conversations.info``, ``conversations.members``,
    ``users.info`` and ``users.conversations``, as slack_sdk calls them."""

    def __init__(self) -> None:
        self.kinds = {PUBLIC_CHANNEL: "public", PRIVATE: "private", DM_MEMBER: "im", DM_OUTSIDER: "im",
                      GROUP_DM: "mpim"}
        self.members = {PUBLIC_CHANNEL: ["UMEM", "UOUT", "UMEM2"], PRIVATE: ["UMEM", "UMEM2"],
                        DM_MEMBER: ["UMEM", "UBOT"], DM_OUTSIDER: ["UOUT", "UBOT"], GROUP_DM: ["UMEM", "UOUT"]}
        self.guests: set[str] = set()
        self.shared: set[str] = set()  # Slack Connect channels (``is_ext_shared``)
        self.users_page = 200  # how many users one ``users.list`` page holds
        super().__init__()

    def respond(self, method, path, query, body):
        params, name = {**query, **body}, path.rsplit("/", 1)[-1]
        if name == "conversations.info":
            kind = self.kinds[params["channel"]]
            return 200, {"ok": True, "channel": {"id": params["channel"], "is_private": kind != "public",
                                                 "is_im": kind == "im", "is_mpim": kind == "mpim",
                                                 "is_ext_shared": params["channel"] in self.shared}}
        if name == "conversations.members":
            return 200, {"ok": True, "members": self.members[params["channel"]],
                         "response_metadata": {"next_cursor": ""}}
        if name == "users.list":  # everyone who is a member somewhere, but strangers (Slack Connect)
            users = sorted({user for members in self.members.values() for user in members} - {"UEXT"})
            start = int(params.get("cursor") or 0)
            page = users[start:start + self.users_page]
            following = str(start + self.users_page) if start + self.users_page < len(users) else ""
            return 200, {"ok": True, "members": [{"id": user, "is_restricted": user in self.guests} for user in page],
                         "response_metadata": {"next_cursor": following}}
        if name == "users.info":
            return 200, {"ok": True, "user": {"id": params["user"], "is_restricted": params["user"] in self.guests}}
        if name == "users.conversations":
            channels = [{"id": c} for c, kind in self.kinds.items()
                        if kind == "private" and params["user"] in self.members[c]]
            return 200, {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}
        return super().respond(method, path, query, body)


@pytest.fixture
def workspace():
    api = Workspace()
    yield api
    api.stop()


def _audiences(api: Workspace) -> SlackAudiences:
    from slack_sdk import WebClient

    return SlackAudiences(client=WebClient(token="xoxb-test", base_url=api.base_url),
                          workspace_audience="slack:workspace")


def test_a_place_may_draw_on_what_every_one_there_may_read(workspace):
    audiences = _audiences(workspace)
    assert audiences.channel_readers(PRIVATE) == [f"slack:{PRIVATE}"]
    assert audiences.channel_readers(PUBLIC_CHANNEL) == ["slack:workspace"]
    assert audiences.place_audiences(PUBLIC_CHANNEL, "UMEM") == [PUBLIC, "slack:workspace"]  # even a member asking
    assert audiences.place_audiences(PRIVATE, "UMEM") == [PUBLIC, f"slack:{PRIVATE}", "slack:workspace"]
    assert audiences.place_audiences(DM_MEMBER, "UMEM") == [PUBLIC, f"slack:{PRIVATE}", "slack:workspace"]
    assert audiences.place_audiences(DM_OUTSIDER, "UOUT") == [PUBLIC, "slack:workspace"]
    assert audiences.place_audiences(GROUP_DM, "UMEM") == [PUBLIC, "slack:workspace"]  # UOUT is there too


def test_guests_get_public_and_their_own_channels_only_and_membership_is_cached_briefly(workspace):
    workspace.guests.add("UMEM2")
    clock = SimpleNamespace(now=0.0)
    from slack_sdk import WebClient

    audiences = SlackAudiences(client=WebClient(token="xoxb-test", base_url=workspace.base_url),
                               workspace_audience="slack:workspace", cache_s=3600, clock=lambda: clock.now)
    assert audiences.user_audiences("UMEM2") == [PUBLIC, f"slack:{PRIVATE}"]
    assert audiences.place_audiences(PRIVATE, "UMEM") == [PUBLIC, f"slack:{PRIVATE}"]  # a guest reads the reply
    workspace.members[PRIVATE].remove("UMEM2")
    clock.now = 299.0
    assert f"slack:{PRIVATE}" in audiences.user_audiences("UMEM2")  # cached ...
    clock.now = 301.0  # ... for at most five minutes, whatever was asked for
    assert audiences.user_audiences("UMEM2") == [PUBLIC]


def test_a_large_channels_guests_are_found_in_one_listing_of_the_workspace_not_a_call_per_member(workspace):
    workspace.members[PUBLIC_CHANNEL] = [f"U{n:04d}" for n in range(450)]
    workspace.guests.add("U0321")
    audiences = _audiences(workspace)
    assert audiences.place_audiences(PUBLIC_CHANNEL, "U0001") == [PUBLIC]  # a guest reads the reply
    counts = workspace.counts()
    assert counts["users.info"] == 0 and counts["users.list"] == 3  # 450 users, 200 a page
    workspace.guests.clear()
    assert _audiences(workspace).place_audiences(PUBLIC_CHANNEL, "U0001") == [PUBLIC, "slack:workspace"]


def test_a_stranger_or_a_slack_connect_channel_narrows_a_channel_to_public(workspace):
    workspace.members[PUBLIC_CHANNEL] = [*(f"U{n:04d}" for n in range(150)), "UEXT"]  # UEXT: another organisation's
    assert _audiences(workspace).place_audiences(PUBLIC_CHANNEL, "U0001") == [PUBLIC]
    workspace.members[PUBLIC_CHANNEL] = ["UMEM", "UMEM2"]
    workspace.shared.add(PUBLIC_CHANNEL)
    before = workspace.counts()["users.info"]
    assert _audiences(workspace).place_audiences(PUBLIC_CHANNEL, "UMEM") == [PUBLIC]
    assert workspace.counts()["users.info"] == before  # Slack Connect: strangers, whoever else is there


def _stores():
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    docs = [Document(doc_id=f"slack:{PRIVATE}/1.1", text=SECRET_WORDS + ".", title="vault rotation",
                     url="https://acme.slack.com/archives/CPRIV/p11", kind=SourceKind.SLACK,
                     audiences=(f"slack:{PRIVATE}",)),
            Document(doc_id="docs:vault.md", text="The vault holds connections. Rotation is explained in the runbook.",
                     title="Vault", url="https://docs/vault")]
    index_documents(docs[:1], store=store, embeddings=embeddings, strategy=ChunkingStrategy(), source="slack",
                    audiences=[f"slack:{PRIVATE}"])
    index_documents(docs[1:], store=store, embeddings=embeddings, strategy=ChunkingStrategy(), source="docs")
    answerer = Answerer(retriever=Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10),
                        cheap_model=None, strong_model=None, rewordings=0, sources=4)
    return store, embeddings, answerer


def _answered(answerer, viewer, *, slack: SlackThread | None = None, place_readers=None) -> object:
    requests, events = InMemoryRequestStore(), FakeEventBus()
    request, _ = handlers.submit_question(
        AskQuestion(question="Where does the vault rotation passphrase live?"), requests=requests, events=events,
        settings=Settings(), viewer=viewer, slack=slack, request_id=f"r-{uuid.uuid4().hex}" if slack else None,
        place_readers=place_readers)
    handlers.answer_request(QuestionQueued(request_id=request.request_id), requests=requests, answerer=answerer,
                            settings=Settings())
    return requests.get(request.request_id)


def test_relabelling_a_page_carries_its_readers_to_the_answers_already_given_and_to_the_feed():
    from askflow.ingest.labels import relabel_location

    store, _, answerer = _stores()
    requests, events = InMemoryRequestStore(), FakeEventBus()
    asked, token = handlers.submit_question(AskQuestion(question="Where does the vault rotation passphrase live?"),
                                            requests=requests, events=events, settings=Settings())
    handlers.answer_request(QuestionQueued(request_id=asked.request_id), requests=requests, answerer=answerer,
                            settings=Settings())
    answered = requests.get(asked.request_id)
    assert answered.cited_docs == ["docs:vault.md"] and answered.in_feed and answered.readable_by(PUBLIC_VIEWER)

    made_internal = relabel_location(store, prefix="docs:vault.md", audiences=["employees"],
                                     answers_source="answers", requests=requests)
    assert made_internal["requests_relabelled"] == 1
    internal = requests.get(asked.request_id)
    assert internal.readers == ["employees"] and not internal.in_feed
    assert not internal.readable_by(PUBLIC_VIEWER)  # GET /requests/{id} for anyone: 404 now
    assert internal.readable_by(PUBLIC_VIEWER, token=token) and internal.readable_by(Viewer.of(admin=True))

    again = relabel_location(store, prefix="docs:vault.md", audiences=["employees"], answers_source="answers",
                             requests=requests)
    assert again["chunks_relabelled"] == 0 and again["requests_relabelled"] == 0  # the same labels: nothing
    relabel_location(store, prefix="docs:vault.md", audiences=[PUBLIC], answers_source="answers", requests=requests)
    public_again = requests.get(asked.request_id)
    assert public_again.readers == [PUBLIC] and public_again.in_feed and public_again.readable_by(PUBLIC_VIEWER)


def test_a_cached_answer_or_a_follow_up_is_only_narrowed_by_a_relabelling():
    from askflow.domain.model import Request

    now = utcnow()
    base = Request(request_id="r1", question="q?", created_at=now, readers=[PUBLIC], cited_docs=["docs:a.md"])
    assert base.relabelled({"docs:a.md": ["employees"]}) == ["employees"]
    assert base.model_copy(update={"readers": ["employees"]}).relabelled({"docs:a.md": [PUBLIC]}) == [PUBLIC]
    for drew_on_more in ({"cached_from": "r0"}, {"context_turns": 1}):  # what else it drew on is not known here
        narrowed = base.model_copy(update={"readers": ["employees"], **drew_on_more})
        assert narrowed.relabelled({"docs:a.md": [PUBLIC]}) == ["employees"]
        assert narrowed.relabelled({"docs:a.md": ["slack:C1"]}) == []  # no one but admins may read both
    assert base.model_copy(update={"readers": ["employees"]}).relabelled({}) == ["employees"]  # its page gone


def _cites_private(request) -> bool:
    return any(s.doc_id.startswith(f"slack:{PRIVATE}") for s in request.sources) or "zebra-orchid" in request.answer


def test_the_private_thread_reaches_its_members_and_no_one_else(workspace):
    _, _, answerer = _stores()
    audiences = _audiences(workspace)

    def in_slack(channel: str, user: str):
        thread = SlackThread(channel=channel, ts="5.5", thread_ts="5.5", user=user)
        return _answered(answerer, Viewer.of(audiences.place_audiences(channel, user)), slack=thread,
                         place_readers=audiences.place_readers(channel))

    anonymous = _answered(answerer, PUBLIC_VIEWER)
    employee_key = _answered(answerer, Viewer.of(["employees"]))
    in_public_channel = in_slack(PUBLIC_CHANNEL, "UMEM")  # a member, asking where everyone reads the reply
    outsider_dm = in_slack(DM_OUTSIDER, "UOUT")
    member_dm = in_slack(DM_MEMBER, "UMEM")
    in_private_channel = in_slack(PRIVATE, "UMEM2")
    for request in (anonymous, employee_key, in_public_channel, outsider_dm):
        assert request.answer and not _cites_private(request), request.sources
    for request in (member_dm, in_private_channel):
        assert _cites_private(request) and f"slack:{PRIVATE}/1.1" in [s.doc_id for s in request.sources]
        assert not request.is_public and not request.in_feed
    assert in_private_channel.readers == [f"slack:{PRIVATE}"]  # the channel's members
    assert member_dm.readers == []  # a direct message: its asker alone (and admins)
    assert in_public_channel.readers == ["slack:workspace"]  # the workspace sees the channel
    assert anonymous.is_public and anonymous.readers == [PUBLIC]
    assert not in_public_channel.is_public  # asked in Slack: never a shared place's, whatever it cites


def test_the_feed_lists_only_public_answers_and_grading_never_makes_a_slack_one_public(workspace):
    from askflow.service_layer.evaluation import judge

    _, _, answerer = _stores()
    audiences = _audiences(workspace)
    requests = InMemoryRequestStore()
    member = _answered(answerer, Viewer.of(audiences.place_audiences(PRIVATE, "UMEM")),
                       slack=SlackThread(channel=PRIVATE, ts="6.6", thread_ts="6.6", user="UMEM"),
                       place_readers=audiences.place_readers(PRIVATE))
    anonymous = _answered(answerer, PUBLIC_VIEWER)
    for request in (member, anonymous):  # both approved by a reviewer: verified, if they may be
        requests.requests[request.request_id] = request.model_copy(update={
            "approval": Approval(by="rita", at=utcnow(), via="admin")})

    class Approving:
        method = "llm"

        def grade(self, batch):
            return {r.request_id: Grade(helpfulness=5, relevance=5, public=True, method="llm") for r in batch}, []

    from askflow.domain.messages import GradingDue

    _, verdicts, _ = judge([GradingDue(request_id=r.request_id, revision="x") for r in (member, anonymous)],
                        requests=requests, grader=Approving(), batch_size=5)
    graded = {v.request_id: v.graded for v in verdicts}
    assert graded[member.request_id].grade.public is False and graded[anonymous.request_id].grade.public is True
    for request_id, item in graded.items():
        requests.save_grade(request_id, item)
    assert [r.request_id for r in handlers.recent_good_answers(requests=requests)] == [anonymous.request_id]


def test_the_cache_serves_an_answer_only_to_whoever_may_read_what_it_cited():
    from askflow.domain.model import LearnedAnswer
    from askflow.learning.cache import AnswerCache
    from askflow.learning.questions import question_key

    store, embeddings, _ = _stores()
    question = "Where does the vault rotation passphrase live?"
    learned = LearnedAnswer(request_id="member-1", collection="c", embedding_model=embeddings.name, vote=1,
                            cited={f"slack:{PRIVATE}/1.1": store.fingerprints([f"slack:{PRIVATE}/1.1"])[
                                f"slack:{PRIVATE}/1.1"]},
                            question=question, question_key=question_key(question), verified=True,
                            answer="In the zebra-orchid runbook [1].", graded_at=utcnow(),
                            readers=[f"slack:{PRIVATE}"])

    class Signals:
        def verified_by_key(self, key, *, collection, readers=None):
            return [learned] if key == learned.question_key else []

        def nearest(self, vector, **kwargs):
            return [(learned, 1.0)]

    cache = AnswerCache(signals=Signals(), store=store, embeddings=embeddings, collection="c", threshold=0.5)
    assert cache.lookup(question, viewer=PUBLIC_VIEWER) is None
    assert cache.lookup(question, viewer=Viewer.of(["slack:workspace"])) is None  # a non-member
    assert cache.lookup(question, viewer=Viewer.of([f"slack:{PRIVATE}"])).answer.request_id == "member-1"
    store.relabel([f"slack:{PRIVATE}/1.1"], ["slack:elsewhere"])  # relabelled since: the member no longer reads it
    assert cache.lookup(question, viewer=Viewer.of([f"slack:{PRIVATE}"])) is None


def test_insights_mask_questions_not_asked_in_public():
    from askflow.insights.model import PRIVATE_QUESTION  # noqa: F401 - the mask the renderings show
    from askflow.insights.report import AskedQuestion

    _, _, answerer = _stores()
    slack = SlackThread(channel=DM_MEMBER, ts="7.7", thread_ts="7.7", user="UMEM")
    member = _answered(answerer, Viewer.of([f"slack:{PRIVATE}", "slack:workspace"]), slack=slack)
    anonymous = _answered(answerer, PUBLIC_VIEWER)
    assert AskedQuestion.of(member).private and AskedQuestion.of(member).cited == ()
    assert not AskedQuestion.of(anonymous).private


def test_readers_are_the_intersection_with_public_for_everyone():
    assert readers_of([[PUBLIC], [PUBLIC]]) == [PUBLIC]
    assert readers_of([[PUBLIC], ["employees"]]) == ["employees"]
    assert readers_of([["employees", "customers"], ["employees"]]) == ["employees"]
    assert readers_of([["employees"], ["slack:C1"]]) == []  # no one audience reads both: admins only
    assert readers_of([[PUBLIC], None]) == []
    assert ADMIN.may_read([]) and not PUBLIC_VIEWER.may_read([]) and not PUBLIC_VIEWER.may_read(None)


# -- the filter inside the real store's queries ---------------------------------------------------------------------

def _chunk(doc_id: str, content: str, audiences, index: int = 0) -> Chunk:
    return Chunk(doc_id=doc_id, index=index, content=content, title=doc_id, section="", url=f"https://x/{doc_id}",
                 sha="v1", audiences=audiences)


def test_pgvector_filters_inside_every_query_and_fills_the_limit(pg_url, collection_name):
    from askflow.adapters.pgvector_store import PgVectorStore

    store = PgVectorStore(url=pg_url, collection=collection_name)
    store.ensure_collection(4)
    private = _chunk("slack:CPRIV/1", SECRET_WORDS, ("slack:CPRIV",))
    legacy = _chunk("docs:legacy.md", SECRET_WORDS + " (before audiences)", None)
    public = [_chunk(f"docs:p{i}.md", f"The vault note {i} about rotation.", (PUBLIC,)) for i in range(8)]
    store.upsert([private, legacy, *public], [[1, 0, 0, 0], [1, 0, 0, 0], *([[0.5, 0.5, 0, 0]] * 8)])
    words = "vault rotation passphrase zebra-orchid runbook"
    for found in (store.keyword_search(words, limit=5, audiences=[PUBLIC]),
                  store.hybrid_search(words, [1, 0, 0, 0], limit=5, alpha=0.5, audiences=[PUBLIC]),
                  store.vector_search([1, 0, 0, 0], limit=5, audiences=[PUBLIC])):
        assert len(found) == 5 and {sc.chunk.doc_id for sc in found} <= {c.doc_id for c in public}
    assert store.keyword_search(words, limit=1, audiences=None)[0].chunk.doc_id in (private.doc_id, legacy.doc_id)
    members = store.keyword_search(words, limit=3, audiences=[PUBLIC, "slack:CPRIV"])
    assert members[0].chunk.doc_id == private.doc_id and legacy.doc_id not in [sc.chunk.doc_id for sc in members]
    assert store.document_chunks(private.doc_id, audiences=[PUBLIC]) == []
    assert store.document_chunks(private.doc_id, audiences=["slack:CPRIV"])[0].audiences == ("slack:CPRIV",)
    assert store.audiences_of([private.doc_id, legacy.doc_id]) == {private.doc_id: ["slack:CPRIV"],
                                                                   legacy.doc_id: None}
    assert store.relabel([legacy.doc_id], [PUBLIC]) == 1 and store.relabel([legacy.doc_id], [PUBLIC]) == 0
    assert legacy.doc_id in [sc.chunk.doc_id for sc in store.keyword_search(words, limit=10, audiences=[PUBLIC])]
    store.close()


def test_a_filter_admitting_one_percent_still_fills_the_vector_search(pg_url, collection_name):
    """The HNSW index alone returns ef_search candidates and the filter would keep about 1% of them: a filter that
    admits few chunks is searched exactly (the nearest of the admitted, all of them), a broader one through
    pgvector's iterative scan, which reads on until the limit is met."""
    import numpy as np

    from askflow.adapters.pgvector_store import PgVectorStore

    store = PgVectorStore(url=pg_url, collection=collection_name, ef_search=40)
    store.ensure_collection(8)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(3000, 8))
    chunks = [_chunk(f"docs:d{i}.md", f"chunk {i}", ("rare",) if i % 100 == 0 else (PUBLIC,)) for i in range(3000)]
    for start in range(0, 3000, 500):
        store.upsert(chunks[start:start + 500], vectors[start:start + 500].tolist())
    query = vectors[1]
    rare = np.arange(0, 3000, 100)
    cosine = vectors[rare] @ query / (np.linalg.norm(vectors[rare], axis=1) * np.linalg.norm(query))
    nearest = [f"docs:d{i}.md" for i in rare[np.argsort(-cosine)[:10]]]
    exact = store.vector_search(query.tolist(), limit=10, audiences=["rare"])
    assert [sc.chunk.doc_id for sc in exact] == nearest  # 30 admitted: searched exactly
    iterative = PgVectorStore(url=pg_url, collection=collection_name, ef_search=40, exact_below=0)
    found = iterative.vector_search(query.tolist(), limit=10, audiences=["rare"])
    assert len(found) == 10 and all(sc.chunk.audiences == ("rare",) for sc in found)
    iterative.close()
    store.close()


def _conditions(where) -> list[tuple[str, object]]:
    """A Weaviate filter's (property, value) conditions, through its ands and ors."""
    if hasattr(where, "filters"):
        return [condition for part in where.filters for condition in _conditions(part)]
    return [(where.target, where.value)]


def test_the_weaviate_adapter_puts_the_audience_filter_in_every_query_it_builds():
    from askflow.adapters.weaviate_store import WeaviateVectorStore

    calls: list[tuple[str, dict]] = []

    class Query:
        def __getattr__(self, name):
            def record(**kwargs):
                calls.append((name, kwargs))
                return SimpleNamespace(objects=[])
            return record

    store = WeaviateVectorStore(url="http://127.0.0.1:1", api_key=None, collection="c")
    store._collection = lambda: SimpleNamespace(query=Query())
    store.hybrid_search("words", [0.1], limit=3, alpha=0.5, audiences=["employees"])
    store.keyword_search("words", limit=3, audiences=["employees"])
    store.document_chunks("docs:a.md", audiences=["employees"])
    assert [name for name, _ in calls] == ["hybrid", "bm25", "fetch_objects"]
    for _, kwargs in calls:
        assert ("audiences", ["employees"]) in _conditions(kwargs["filters"])
    calls.clear()
    store.hybrid_search("words", [0.1], limit=3, alpha=0.5, audiences=None)  # an admin's: no filter
    assert calls[0][1]["filters"] is None


# -- the CLI: a docs folder for employees -------------------------------------------------------------------------

def test_a_folder_for_employees_is_found_with_that_audience_only_and_relabelled_without_embedding(
        pg_url, collection_name, tmp_path):
    from tests.test_cli import askflow

    docs = tmp_path / "handbook"
    docs.mkdir()
    (docs / "leave.md").write_text("# Parental leave\n\nEmployees get twenty weeks of parental leave, paid.\n")
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    question = "How many weeks of parental leave do employees get?"
    ingested = askflow("ingest", str(docs), "--source", "handbook", "--audience", "employees", env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert "Parental leave" not in askflow("ask", question, env=env).stdout
    assert "Parental leave" in askflow("ask", question, "--audience", "employees", env=env).stdout
    relabelled = askflow("ingest", str(docs), "--source", "handbook", "--audience", "public", env=env)
    result = json.loads(relabelled.stdout.strip().splitlines()[-1])
    assert result["documents_written"] == 0 and result["chunks_relabelled"] >= 1  # nothing embedded again
    assert "Parental leave" in askflow("ask", question, env=env).stdout
    back = askflow("relabel", "handbook:", "--audience", "employees", env=env)
    assert back.returncode == 0 and json.loads(back.stdout)["chunks_relabelled"] >= 1
    from askflow.adapters.pgvector_store import PgVectorStore  # what the next ask would search: read in process

    store = PgVectorStore(url=pg_url, collection=collection_name)
    assert store.document_audiences("handbook:") == {"handbook:leave.md": ["employees"]}
    assert not store.keyword_search("parental leave weeks", limit=5, audiences=[PUBLIC])
    store.close()
    bad = askflow("ingest", str(docs), "--source", "handbook", "--audience", "bad name!", env=env)
    assert bad.returncode == 2 and "askflow: audience" in bad.stderr


# -- credentials: API keys, the page's cookie, IAP ----------------------------------------------------------------

class Certs(LoopbackServer):
    """IAP's key endpoint on loopback: ``{kid: PEM public key}``, and an ES256 signer for tokens."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.body = json.dumps({"kid-1": pem}).encode()
        super().__init__()

    @property
    def certs_url(self) -> str:
        return f"{self.url}/iap/verify/public_key"

    def _handler(self):
        body = self.body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def token(self, *, key=None, **claims) -> str:
        from cryptography.hazmat.primitives import serialization
        from google.auth import crypt, jwt

        pem = (key or self.key).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
        now = int(time.time())
        payload = {"iss": "https://cloud.google.com/iap", "aud": "/projects/1/apps/askflow", "iat": now,
                   "exp": now + 600, "email": "ana@example.com", "sub": "accounts.google.com:1"} | claims
        return jwt.encode(crypt.ES256Signer.from_string(pem, key_id="kid-1"), payload).decode()


def _request(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None):
    return SimpleNamespace(headers=headers or {}, cookies=cookies or {}, scheme="https")


def test_iap_identities_verify_and_forged_ones_count_for_nothing():
    from cryptography.hazmat.primitives.asymmetric import ec

    from askflow.entrypoints.credentials import IAP_HEADER, caller

    certs = Certs()
    settings = Settings(iap_audience="/projects/1/apps/askflow", iap_certs_url=certs.certs_url,
                        iap_audience_rules={"@example.com": ["employees"]}, iap_admins=["boss@example.com"])
    good = caller(_request({IAP_HEADER: certs.token(hd="example.com")}), settings)
    assert good.via == "iap" and good.viewer == Viewer.of(["employees"]) and not good.viewer.admin
    assert caller(_request({IAP_HEADER: certs.token(email="boss@example.com")}), settings).viewer.admin
    forged = certs.token(key=ec.generate_private_key(ec.SECP256R1()))
    for headers in ({IAP_HEADER: forged}, {IAP_HEADER: certs.token(aud="/projects/2/apps/other")},
                    {IAP_HEADER: certs.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)},
                    {IAP_HEADER: certs.token().rsplit(".", 1)[0] + "."},  # unsigned
                    {"x-goog-authenticated-user-email": "accounts.google.com:boss@example.com"}):
        who = caller(_request(headers), settings)
        assert who.viewer == PUBLIC_VIEWER and not who.viewer.admin, headers
    certs.stop()


def test_a_domain_rule_needs_the_tokens_hosted_domain_not_just_an_address_there():
    """A consumer Google account may carry a company address (ana@example.com with no ``hd``): a domain rule is the
    Workspace domain's, so it counts only when IAP's signed ``hd`` claim is that domain; an e-mail rule still
    names its address."""
    from askflow.entrypoints.credentials import IAP_HEADER, caller

    certs = Certs()
    settings = Settings(iap_audience="/projects/1/apps/askflow", iap_certs_url=certs.certs_url,
                        iap_audience_rules={"@Example.com": ["employees"], "eve@example.com": ["finance"]})
    try:
        def viewer(**claims):
            who = caller(_request({IAP_HEADER: certs.token(**claims)}), settings)
            assert who.via == "iap", claims
            return who.viewer

        assert viewer(hd="example.com") == Viewer.of(["employees"])
        assert viewer(hd="EXAMPLE.COM", email="Ana@Example.com") == Viewer.of(["employees"])
        assert viewer() == PUBLIC_VIEWER  # a consumer account with the company's address
        assert viewer(hd="other.example") == PUBLIC_VIEWER  # another Workspace's account
        assert viewer(hd="example.com.evil", email="ana@example.com.evil") == PUBLIC_VIEWER
        assert viewer(email="eve@example.com") == Viewer.of(["finance"])  # the address itself named
        assert viewer(email="eve@example.com", hd="example.com") == Viewer.of(["employees", "finance"])
    finally:
        certs.stop()


def test_a_signed_e_mail_spelled_like_a_rule_or_lowering_into_another_address_gets_no_rule():
    """Rules are looked up by the token's e-mail: a claim spelled like a domain rule (``@example.com``) or a group
    rule (``group:staff@example.com``), as an identity provider that signs any string may issue, or one that
    lower-cases into another person's address (the Kelvin sign into ``kim@``), is no address: ``public``, and no
    group is asked about it."""
    from askflow.entrypoints.credentials import IAP_HEADER, caller

    certs = Certs()
    settings = Settings(iap_audience="/projects/1/apps/askflow", iap_certs_url=certs.certs_url,
                        iap_audience_rules={"@example.com": ["employees"], "group:staff@example.com": ["staff"],
                                            "kim@example.com": ["finance"]}, iap_admins=["kim@example.com"])
    asked = []

    class Directory:
        def is_member(self, group, email):
            asked.append((group, email))
            return True

    try:
        for email in ("@example.com", "group:staff@example.com", "\u212aim@example.com"):
            who = caller(_request({IAP_HEADER: certs.token(email=email)}), settings, groups=lambda: Directory())
            assert who.via == "iap" and who.viewer == PUBLIC_VIEWER and not who.viewer.admin, email
        assert asked == []
        kim = caller(_request({IAP_HEADER: certs.token(email="Kim@example.com")}), settings, groups=lambda: Directory())
        assert kim.viewer == Viewer.of(["finance", "staff"], admin=True) and asked == [("staff@example.com",
                                                                                       "kim@example.com")]
    finally:
        certs.stop()


class Groups(LoopbackAPI):
    """The Cloud Identity Groups API on loopback, as Google documents it: ``GET /v1/groups:lookup?groupKey.id=GROUP``
    answers ``{"name": "groups/ID"}`` (404 for an unknown group) and ``GET /v1/groups/ID/memberships:
    checkTransitiveMembership?query=member_key_id == 'EMAIL'`` answers ``{"hasMembership": ...}``. A call of any other
    shape is a 400, one without a bearer token a 401; ``delay_s`` holds every answer back."""

    def __init__(self) -> None:
        self.groups = {"staff@example.com": ("groups/03x1staff", {"ana@example.com", "o'neil@example.com"})}
        self.delay_s = 0.0
        super().__init__()

    def call_name(self, call: dict) -> str:
        return call["path"].rsplit("/", 1)[-1]

    def respond(self, method, path, query, body):
        import re

        time.sleep(self.delay_s)
        with self._lock:
            headers = {key.lower(): value for key, value in self.calls[-1]["headers"].items()}
        if not headers.get("authorization", "").startswith("Bearer "):
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        if method != "GET" or body:
            return 400, {"error": {"code": 400, "message": "a GET without a body"}}
        if path == "/v1/groups:lookup" and set(query) == {"groupKey.id"}:
            group = self.groups.get(query["groupKey.id"])
            return (200, {"name": group[0]}) if group else (404, {"error": {"code": 404, "status": "NOT_FOUND"}})
        found = re.fullmatch(r"/v1/(groups/[^/]+)/memberships:checkTransitiveMembership", path)
        member = re.fullmatch(r"member_key_id == '((?:[^'\\]|\\.)*)'", query.get("query", ""))
        if found and member and set(query) == {"query"}:
            email = re.sub(r"\\(.)", r"\1", member.group(1))
            members = next((m for name, m in self.groups.values() if name == found.group(1)), None)
            if members is None:
                return 404, {"error": {"code": 404, "status": "NOT_FOUND"}}
            return 200, {"hasMembership": email in members}
        return 400, {"error": {"code": 400, "message": f"not a call this API knows: {path} {query}"}}


@pytest.fixture
def groups(monkeypatch):
    """The loopback Groups API; google-auth's default credentials are a fixed bearer token (``scopes``: what each
    call of ``google.auth.default`` asked for), so nothing reaches Google."""
    import google.auth
    from google.oauth2.credentials import Credentials

    api = Groups()
    api.scopes = []

    def default(scopes=None):
        api.scopes.append(scopes)
        return Credentials(token="loopback-token"), "askflow-test"

    monkeypatch.setattr(google.auth, "default", default)
    yield api
    api.stop()


def _group_settings(certs: Certs, groups: Groups, rules: dict[str, list[str]], **more) -> Settings:
    return Settings(iap_audience="/projects/1/apps/askflow", iap_certs_url=certs.certs_url,
                    cloud_identity_url=groups.url, iap_audience_rules=rules, **more)


def test_a_group_rule_admits_the_groups_members_as_cloud_identity_says_and_asks_once_in_five_minutes(groups):
    from askflow.bootstrap import Components
    from askflow.entrypoints.credentials import IAP_HEADER, caller

    certs = Certs()
    settings = _group_settings(certs, groups, {"group:Staff@Example.com": ["employees"]})
    components = Components(settings)
    try:
        def viewer(email):
            who = caller(_request({IAP_HEADER: certs.token(email=email)}), settings,
                         groups=lambda: components.group_directory)
            assert who.via == "iap" and who.name == email.lower()
            return who.viewer

        assert viewer("Ana@Example.com") == Viewer.of(["employees"])  # a member (of a group in it, Google says)
        assert viewer("bob@example.com") == PUBLIC_VIEWER
        assert viewer("o'neil@example.com") == Viewer.of(["employees"])
        check = "/v1/groups/03x1staff/memberships:checkTransitiveMembership"
        assert [(call["method"], call["path"], call["query"]) for call in groups.calls] == [
            ("GET", "/v1/groups:lookup", {"groupKey.id": "staff@example.com"}),
            ("GET", check, {"query": "member_key_id == 'ana@example.com'"}),
            ("GET", check, {"query": "member_key_id == 'bob@example.com'"}),
            ("GET", check, {"query": "member_key_id == 'o\\'neil@example.com'"}),
        ]
        assert [{k.lower(): v for k, v in call["headers"].items()}["authorization"] for call in groups.calls] == \
            ["Bearer loopback-token"] * 4
        assert groups.scopes == [["https://www.googleapis.com/auth/cloud-identity.groups.readonly"]]  # built once
        assert viewer("ana@example.com") == Viewer.of(["employees"]) and viewer("bob@example.com") == PUBLIC_VIEWER
        assert len(groups.calls) == 4  # the second requests within five minutes: the cached answers
    finally:
        components.close()
        certs.stop()


def test_group_answers_are_kept_five_minutes_at_most():
    from google.auth.transport.requests import AuthorizedSession
    from google.oauth2.credentials import Credentials

    from askflow.adapters.cloud_identity_groups import CloudIdentityGroups

    api, now = Groups(), [1000.0]
    try:
        directory = CloudIdentityGroups(session=AuthorizedSession(Credentials(token="t")), base_url=api.url,
                                        cache_s=3600, clock=lambda: now[0])
        assert directory.is_member("staff@example.com", "ana@example.com")
        api.groups["staff@example.com"][1].discard("ana@example.com")  # removed from the group
        now[0] += 299
        assert directory.is_member("staff@example.com", "ana@example.com") and len(api.calls) == 2
        now[0] += 2  # five minutes past the first answer, whatever cache_s asked for
        assert not directory.is_member("staff@example.com", "ana@example.com")
        assert api.counts() == {"groups:lookup": 2, "memberships:checkTransitiveMembership": 2}
    finally:
        api.stop()


def test_expired_group_answers_are_dropped_so_the_cache_holds_about_what_is_live():
    """Every address asked about is remembered five minutes; past that, answers no one asks again must not pile up
    for the life of the process."""
    from askflow.adapters.cloud_identity_groups import CloudIdentityGroups
    from askflow.adapters.expiring_memo import SWEEP_AT

    class Session:  # requests' interface, answering at once: the loopback API is shown above
        def get(self, url, params, timeout):
            answer = {"name": "groups/03x1staff"} if url.endswith("groups:lookup") else {"hasMembership": False}
            return SimpleNamespace(status_code=200, json=lambda: answer, text="")

    now, held = [1000.0], []
    directory = CloudIdentityGroups(session=Session(), base_url="http://127.0.0.1:1", clock=lambda: now[0])
    for round_ in range(6):  # six rounds of new askers, each five minutes after the last
        for i in range(SWEEP_AT):
            directory.is_member("staff@example.com", f"user{round_}-{i}@example.com")
            held.append(len(directory._memo))
        now[0] += 301
    assert max(held) <= 2 * SWEEP_AT + 2  # about twice what is live at most, not every address ever asked about


def test_without_a_group_rule_no_directory_is_built_and_none_is_asked(groups):
    """Only group rules ask the directory, and only for audiences the identity's other rules did not give."""
    from askflow.bootstrap import Components
    from askflow.entrypoints.credentials import IAP_HEADER, caller

    certs = Certs()
    try:
        for rules in ({"@example.com": ["employees"]}, {"@example.com": ["employees"], "group:staff@example.com":
                                                        ["employees"]}):
            settings = _group_settings(certs, groups, rules)
            with Components(settings) as components:
                who = caller(_request({IAP_HEADER: certs.token(hd="example.com")}), settings,
                             groups=lambda built=components: built.group_directory)
            assert who.viewer == Viewer.of(["employees"])
        assert groups.calls == [] and groups.scopes == []
        with pytest.raises(ValueError, match="group:NAME@DOMAIN"):
            Settings(iap_audience_rules={"group:staff": ["employees"]})
    finally:
        certs.stop()


class _Components(SimpleNamespace):
    """What the asking API reads, on fakes, but for the group directory: ``built``'s (``bootstrap``'s, built on
    first use)."""

    @property
    def group_directory(self):
        return self.built.group_directory


def test_a_failing_group_directory_admits_no_one_to_the_group_and_the_request_proceeds(groups, caplog,
                                                                                        monkeypatch):
    """An HTTP error or a time-out of Cloud Identity: the group rule admits no one (a warning), the other rules still
    count, the question is taken (202, never a 500); the failure is not kept, so the next request asks again."""
    import google.auth
    from flask import Request
    from google.auth.exceptions import DefaultCredentialsError
    from werkzeug.test import EnvironBuilder

    from askflow.bootstrap import Components
    from askflow.entrypoints import http_api
    from askflow.entrypoints.credentials import IAP_HEADER

    certs = Certs()
    settings = _group_settings(certs, groups, {"group:staff@example.com": ["employees"], "@example.com": ["all"]},
                               cloud_identity_timeout_s=0.3)
    components = _Components(settings=settings, requests=InMemoryRequestStore(), events=FakeEventBus(),
                             budgets=None, built=Components(settings))
    try:
        def asked():
            environ = EnvironBuilder(path="/requests", method="POST", json={"question": "Our leave policy?"},
                                     headers={IAP_HEADER: certs.token(hd="example.com")}).get_environ()
            body, status, _ = http_api.handle(Request(environ), components)
            assert status == 202, body
            return components.requests.get(json.loads(body)["request_id"]).audiences

        groups.fail("groups:lookup", 500)
        assert asked() == ["all", PUBLIC]
        assert "group:staff@example.com admits no one" in caplog.text and "500" in caplog.text
        groups.delay_s = 1.0  # past the 0.3 s time-out
        assert asked() == ["all", PUBLIC]
        assert "ReadTimeout" in caplog.text
        groups.delay_s = 0.0
        assert asked() == ["all", "employees", PUBLIC]
        groups.fail("checkTransitiveMembership", 503)
        assert asked() == ["all", "employees", PUBLIC]  # the answer kept from before the failure

        def no_credentials(scopes=None):
            raise DefaultCredentialsError("none here")

        monkeypatch.setattr(google.auth, "default", no_credentials)
        components.built.close()
        components.built = Components(settings)  # a new instance: no credentials to build its directory with
        assert asked() == ["all", PUBLIC]
        assert "needs Google credentials" in caplog.text
    finally:
        components.built.close()
        certs.stop()


def test_keys_are_bound_to_audiences_and_the_page_cookie_opens_the_asking_api_only():
    from askflow.entrypoints.credentials import SESSION_COOKIE, caller, session_cookie

    settings = Settings(api_key="admin-key", api_keys=[{"name": "staff", "key": "staff-key",
                                                         "audiences": ["employees"]}])
    assert caller(_request({"X-API-Key": "admin-key"}), settings).viewer.admin
    staff = caller(_request({"X-API-Key": "staff-key"}), settings)
    assert staff.may_ask and staff.viewer == Viewer.of(["employees"]) and not staff.viewer.admin
    assert not caller(_request({"X-API-Key": "wrong"}), settings).may_ask
    cookie = session_cookie(_request(), settings).split(";")[0].split("=", 1)[1]
    session = caller(_request(cookies={SESSION_COOKIE: cookie}), settings)
    assert session.may_ask and session.via == "session" and session.viewer == PUBLIC_VIEWER
    assert not caller(_request(), settings).may_ask


class _Reports:
    """The insights reports' port in memory (``FirestoreInsightsReports``' rules: one per id, the latest by period)."""

    def __init__(self, *reports) -> None:
        self.reports = {report.report_id: report for report in reports}

    def save(self, report) -> None:
        self.reports[report.report_id] = report

    def get(self, report_id):
        return self.reports.get(report_id)

    def latest(self):
        return max(self.reports.values(), key=lambda r: r.period_end, default=None)


def _http(handle, components, path: str, headers: dict[str, str] | None = None,
          cookies: dict[str, str] | None = None) -> tuple[int, str]:
    from flask import Request
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, headers=headers or {}).get_environ()
    if cookies:
        environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    body, status, _ = handle(Request(environ), components)
    return status, body if isinstance(body, str) else "".join(body)


def test_the_admin_pages_are_the_admin_functions_and_refuse_the_pages_cookie():
    """Issue 24: the public function has no admin route at all (its gate cannot open one); the admin function
    refuses the web page's session cookie and accepts the admin credential."""
    from askflow.entrypoints import admin_api, http_api
    from askflow.entrypoints.credentials import SESSION_COOKIE, session_cookie

    settings = Settings(api_key="admin-key", api_keys=[{"name": "staff", "key": "staff-key",
                                                         "audiences": ["employees"]}])
    components = SimpleNamespace(settings=settings, requests=InMemoryRequestStore(), insights_reports=_Reports())
    cookie = {SESSION_COOKIE: session_cookie(_request(), settings).split(";")[0].split("=", 1)[1]}
    assert _http(http_api.handle, components, "/requests?good=true", cookies=cookie)[0] == 200  # the asking API
    for path in ("/admin", "/admin/review", "/insights"):
        status, body = _http(http_api.handle, components, path, {"X-API-Key": "admin-key"})
        assert status == 404 and "no route" in body, path  # not the public function's
        assert _http(admin_api.handle, components, path, cookies=cookie)[0] == 403, path
        assert _http(admin_api.handle, components, path)[0] == 401, path
        assert _http(admin_api.handle, components, path, {"X-API-Key": "admin-key"})[0] == 200, path
    assert admin_api.serves("/admin/review/r1") and admin_api.serves("/insights") and not admin_api.serves("/")
    assert not admin_api.serves("/administrators") and not admin_api.serves("/requests")


def _insights_report():
    """A report of two topics, four questions each: the first's two questions asked in a private channel (its secret
    words, and the private page their answers cited); every cluster a gap. The namer records what it was sent."""
    import datetime as dt

    import numpy as np

    from askflow.domain.model import Usage
    from askflow.insights.model import Page
    from askflow.insights.report import AskedQuestion, build_report
    from askflow.ports import ChatModel, Completion

    private_page = (f"slack:{PRIVATE}/1.1", "vault runbook", "https://slack.example/priv")
    public_page = ("docs:pools.md", "Pools", "https://docs.example/pools")

    def asked(n, question, *, private=False, sensitive=False):
        cited = (private_page,) if private else (public_page,)
        return AskedQuestion(request_id=f"r{n}", question=question, private=private or sensitive,
                             created_at=dt.datetime(2026, 11, 20, tzinfo=dt.UTC), failed=False, dont_know=True,
                             net_rating=0, top_source="", cited=() if private else cited, confidence=1.0,
                             admin_cited=cited, sensitive=sensitive)

    questions = [asked(0, "How do pools limit tasks?"), asked(1, "How many tasks may a pool run?"),
                 asked(2, "Where is the zebra orchid passphrase kept?", private=True),
                 asked(3, "Who rotates the zebra orchid passphrase?", private=True),
                 *[asked(n, f"How do I retry a failed task, attempt {n}?") for n in range(4, 8)],
                 asked(8, "Mail jane.doe@example.com how pools limit tasks", sensitive=True)]  # private data
    noise = np.random.default_rng(0).normal(scale=0.01, size=(9, 8))
    noise[8] = 0  # the question with private data: the pools cluster's centre, so one of its representatives
    vectors = np.vstack([np.eye(8)[0]] * 4 + [np.eye(8)[1]] * 4 + [np.eye(8)[0]]) + noise
    sent: list[str] = []

    class Namer(ChatModel):
        name = "namer"

        def complete(self, system, user, *, json_output=False):
            sent.append(user)
            groups = json.loads(user)["groups"]
            return Completion(text=json.dumps({"names": [
                {"cluster": g["cluster"], "name": "Zebra vault" if "zebra" in json.dumps(g) else "Pools"}
                for g in groups]}), usage=Usage(model="namer"))

    report = build_report(
        questions, previous=[], start=dt.datetime(2026, 11, 16, tzinfo=dt.UTC),
        end=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
        vectors=lambda qs: vectors[[questions.index(q) for q in qs]], embed_texts=lambda texts: np.zeros((0, 8)),
        closest_pages=lambda label, centre: [Page(title="Pools", url=public_page[2], doc_id=public_page[0])],
        admin_closest_pages=lambda label, centre: [Page(title="vault runbook", url=private_page[2],
                                                        doc_id=private_page[0])],
        namer=Namer(), embedding_model="test", min_cluster_size=3, low_confidence=1.37, low_similarity=0.35,
        gap_share=0.5, assign_similarity=0.5, built_at=dt.datetime(2026, 11, 23, tzinfo=dt.UTC))
    return report, sent


def test_the_insights_mask_non_public_questions_for_all_but_an_admin_who_sees_them_labelled():
    """Issue 24: the shared view masks a question not asked in public (its words make no label or name, its cited
    page and the pages only some may read are not shown); an admin's view shows them, labelled as such."""
    from askflow.entrypoints import admin_api
    from askflow.entrypoints.credentials import SESSION_COOKIE, session_cookie
    from askflow.insights.model import PRIVATE_QUESTION, InsightsReport
    from askflow.insights.render import ADMIN_VIEW, csv_text, html_page, table_text

    report, sent = _insights_report()
    secret = ("zebra", "orchid", "vault runbook", "slack.example", "Zebra vault")
    (pools,) = [c for c in report.clusters if "pool" in c.label]
    assert PRIVATE_QUESTION in pools.representatives and pools.name == "Pools" and pools.gap
    shared = [html_page(report), csv_text(report), table_text(report), report.model_dump_json(),
              "".join(g.finding for g in report.gaps), sent[0]]
    for text in shared:
        assert not [word for word in secret if word in text], text[:200]
    admin = report.admin_view
    (unmasked,) = [c for c in admin.clusters if c.cluster == pools.cluster]
    assert "zebra" in unmasked.label and unmasked.representatives.count(PRIVATE_QUESTION) == 1  # the e-mail's
    assert unmasked.name == "Zebra vault" and len(sent) == 2  # one more call names the admin view
    assert _cites_private_page(unmasked) and [c.size for c in admin.clusters] == [c.size for c in report.clusters]
    (gap,) = [g for g in admin.gaps if g.cluster == pools.cluster]
    assert [p.title for p in gap.closest_pages] == ["vault runbook"]
    page = html_page(report, admin=True)
    assert ADMIN_VIEW in page and "zebra orchid passphrase" in page and "vault runbook" in page
    assert ADMIN_VIEW not in html_page(report)
    assert InsightsReport.model_validate(report.document()).admin_view == admin  # the store keeps it
    # private data (an e-mail address, a key) is masked in the admin view too, and never stored
    assert "jane.doe" not in json.dumps(report.document()) and "jane.doe" not in page and "jane" not in sent[1]

    # over HTTP: the admin key gets the admin view, a key bound to audiences the shared one, the page's cookie none
    settings = Settings(api_key="admin-key", api_keys=[{"name": "staff", "key": "staff-key",
                                                         "audiences": [f"slack:{PRIVATE}"]}])
    components = SimpleNamespace(settings=settings, requests=InMemoryRequestStore(),
                                 insights_reports=_Reports(report))
    status, body = _http(admin_api.handle, components, "/insights", {"X-API-Key": "admin-key"})
    assert status == 200 and ADMIN_VIEW in body and "zebra orchid passphrase" in body
    status, body = _http(admin_api.handle, components, f"/insights?report={report.report_id}",
                         {"X-API-Key": "staff-key"})
    assert status == 200 and ADMIN_VIEW not in body and PRIVATE_QUESTION in body
    assert not [word for word in secret if word in body]
    cookie = {SESSION_COOKIE: session_cookie(_request(), settings).split(";")[0].split("=", 1)[1]}
    status, body = _http(admin_api.handle, components, "/insights", cookies=cookie)
    assert status == 403 and "zebra" not in body
    older = _Reports(report.model_copy(update={"admin_view": None}))  # built before reports kept one
    status, body = _http(admin_api.handle, SimpleNamespace(settings=settings, insights_reports=older), "/insights",
                         {"X-API-Key": "admin-key"})
    assert status == 200 and "before reports kept an admin view" in body and "zebra" not in body


def _cites_private_page(cluster) -> bool:
    return "https://slack.example/priv" in [page.url for page in cluster.top_pages]


def test_a_request_not_asked_in_public_is_shown_to_its_asker_and_admins_only():
    from flask import Request
    from werkzeug.test import EnvironBuilder

    from askflow.entrypoints.http_api import handle

    requests = InMemoryRequestStore()
    settings = Settings(api_key="admin-key", api_keys=[{"name": "staff", "key": "staff-key",
                                                         "audiences": ["employees"]}])
    token = "staff-browser-token-0123456789"
    asked, _ = handlers.submit_question(AskQuestion(question="Our leave policy?"), requests=requests,
                                        events=FakeEventBus(), settings=settings, asker_token=token,
                                        viewer=Viewer.of(["employees"]))
    components = SimpleNamespace(settings=settings, requests=requests)

    def get(headers):
        environ = EnvironBuilder(path=f"/requests/{asked.request_id}", headers=headers).get_environ()
        body, status, _ = handle(Request(environ), components)
        return status, json.loads(body)

    assert get({"X-API-Key": "staff-key", "X-Asker-Token": token})[0] == 200
    assert get({"X-API-Key": "admin-key"})[0] == 200
    status, body = get({"X-API-Key": "staff-key", "X-Asker-Token": "someone-elses-token-0123456"})
    assert status == 404 and "no request" in body["error"]  # as if it did not exist
    assert not asked.asked_in_public and asked.audiences == ["employees", PUBLIC]


def test_a_slack_thread_id_names_no_channel():
    from askflow.entrypoints.slack_app import slack_thread_id

    thread = slack_thread_id("CPRIV", "1700000000.000100")
    assert "CPRIV" not in thread and thread == slack_thread_id("CPRIV", "1700000000.000100")
    assert thread != slack_thread_id("CPUB", "1700000000.000100")


def test_graded_private_answers_are_written_back_for_their_readers_only():
    from askflow.service_layer.evaluation import _write_back

    store, embeddings, answerer = _stores()
    member = _answered(answerer, Viewer.of([f"slack:{PRIVATE}"]),
                       slack=SlackThread(channel=PRIVATE, ts="8.8", thread_ts="8.8", user="UMEM"),
                       place_readers=[f"slack:{PRIVATE}"])
    assert member.readers == [f"slack:{PRIVATE}"]
    _write_back([member], [], store=store, embeddings=embeddings, strategy=ChunkingStrategy(),
                answers_source="answers", answers_base_url="https://askflow/answers",
                fingerprints=store.fingerprints([s.doc_id for s in member.sources]))
    stored = f"answers:{member.request_id}"
    assert store.audiences_of([stored]) == {stored: [f"slack:{PRIVATE}"]}
    outsiders = store.keyword_search("vault rotation passphrase", limit=10, audiences=[PUBLIC, "slack:workspace"])
    assert outsiders and stored not in [hit.chunk.doc_id for hit in outsiders]
    members = store.keyword_search("vault rotation passphrase", limit=10, audiences=[PUBLIC, f"slack:{PRIVATE}"])
    assert stored in [hit.chunk.doc_id for hit in members]


def test_a_question_asked_in_a_private_place_never_becomes_public_through_a_public_answer(workspace):
    """Asked in a private channel and answered from public pages only: the question is the channel's, so the answer
    (which a write-back would store with its question) is read by the channel's members, not by everyone."""
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    index_documents([Document(doc_id="docs:vault.md", text="The vault holds connections and rotates them.",
                              title="Vault", url="https://docs/vault")], store=store, embeddings=embeddings,
                    strategy=ChunkingStrategy(), source="docs")
    answerer = Answerer(retriever=Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10),
                        cheap_model=None, strong_model=None, rewordings=0, sources=4)
    audiences = _audiences(workspace)
    asked = _answered(answerer, Viewer.of(audiences.place_audiences(PRIVATE, "UMEM")),
                      slack=SlackThread(channel=PRIVATE, ts="9.9", thread_ts="9.9", user="UMEM"),
                      place_readers=audiences.place_readers(PRIVATE))
    assert [s.doc_id for s in asked.sources] == ["docs:vault.md"] and asked.readers == [f"slack:{PRIVATE}"]
    employee = _answered(answerer, Viewer.of(["employees"]))  # a keyed web asker: shown to them alone
    assert employee.readers == [] and not employee.in_feed


def test_a_follow_up_inherits_what_its_thread_drew_on():
    _, _, answerer = _stores()
    requests, events = InMemoryRequestStore(), FakeEventBus()
    token = "thread-starter-token-0123456789"
    settings = Settings()
    root, _ = handlers.submit_question(AskQuestion(question="Where does the vault rotation passphrase live?"),
                                       requests=requests, events=events, settings=settings, asker_token=token,
                                       viewer=Viewer.of([f"slack:{PRIVATE}"]))
    handlers.answer_request(QuestionQueued(request_id=root.request_id), requests=requests, answerer=answerer,
                            settings=settings)
    assert _cites_private(requests.get(root.request_id))
    follow_up, _ = handlers.submit_question(AskQuestion(question="And where is the vault?",
                                                        thread_id=root.request_id),
                                            requests=requests, events=events, settings=settings, asker_token=token)
    handlers.answer_request(QuestionQueued(request_id=follow_up.request_id), requests=requests, answerer=answerer,
                            settings=settings)
    answered = requests.get(follow_up.request_id)
    assert answered.context_turns == 1 and answered.readers == [] and not answered.in_feed


def test_slack_channels_are_labelled_by_who_may_read_them_and_relabelled_when_that_changes(workspace):
    from slack_sdk import WebClient

    from askflow.ingest.pipeline import index_slack_channel

    workspace.channels = {PRIVATE: [{"ts": "1700000000.000100", "user": "UMEM", "text": SECRET_WORDS}],
                          PUBLIC_CHANNEL: [{"ts": "1700000000.000200", "user": "UMEM", "text": "Pools limit tasks."}]}
    store, embeddings, audiences = FakeVectorStore(), HashEmbeddings(), _audiences(workspace)
    client = WebClient(token="xoxb-test", base_url=workspace.base_url)
    for channel in (PRIVATE, PUBLIC_CHANNEL):
        index_slack_channel(channel, client=client, store=store, embeddings=embeddings, strategy=ChunkingStrategy(),
                            answers_source="answers", reply_window_s=7 * 86_400,
                            audiences=audiences.channel_readers(channel))
    assert store.document_audiences(f"slack:{PRIVATE}/") == {f"slack:{PRIVATE}/1700000000.000100":
                                                             [f"slack:{PRIVATE}"]}
    assert list(store.document_audiences(f"slack:{PUBLIC_CHANNEL}/").values()) == [["slack:workspace"]]
    calls = embeddings.calls
    index_slack_channel(PUBLIC_CHANNEL, client=client, store=store, embeddings=embeddings,
                        strategy=ChunkingStrategy(), answers_source="answers", reply_window_s=7 * 86_400,
                        audiences=[f"slack:{PUBLIC_CHANNEL}"])  # the channel was made private
    assert list(store.document_audiences(f"slack:{PUBLIC_CHANNEL}/").values()) == [[f"slack:{PUBLIC_CHANNEL}"]]
    assert embeddings.calls == calls  # relabelled, nothing embedded


def test_a_run_that_names_no_audience_keeps_the_locations_labels():
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    page = Document(doc_id="handbook:leave.md", text="Twenty weeks of parental leave.", title="Leave",
                    url="https://hb/leave")
    index_documents([page], store=store, embeddings=embeddings, strategy=ChunkingStrategy(), source="handbook",
                    audiences=["employees"])
    newer = Document(doc_id="handbook:pay.md", text="Pay day is the 25th.", title="Pay", url="https://hb/pay")
    index_documents([page, newer], store=store, embeddings=embeddings, strategy=ChunkingStrategy(),
                    source="handbook")  # the daily run, naming none
    assert store.document_audiences("handbook:") == {"handbook:leave.md": ["employees"],
                                                     "handbook:pay.md": ["employees"]}


def test_relabelling_a_document_id_leaves_its_namesakes_alone():
    from askflow.ingest.labels import relabel_location

    store, embeddings = FakeVectorStore(), HashEmbeddings()
    for doc_id in ("docs:guides", "docs:guides-internal/secret.md"):
        index_documents([Document(doc_id=doc_id, text="words", title="t", url="https://x")], store=store,
                        embeddings=embeddings, strategy=ChunkingStrategy(), source="docs", prune=False,
                        audiences=["employees"])
    relabel_location(store, prefix="docs:guides", audiences=[PUBLIC], answers_source="answers")
    assert store.document_audiences("docs:") == {"docs:guides": [PUBLIC],
                                                 "docs:guides-internal/secret.md": ["employees"]}


def test_a_learned_association_never_brings_in_a_document_the_viewer_may_not_read():
    from askflow.domain.model import LearnedAnswer
    from askflow.learning.questions import question_key
    from askflow.learning.ranking import LearnedRanking

    store, embeddings, _ = _stores()
    private = f"slack:{PRIVATE}/1.1"
    record = LearnedAnswer(request_id="member-1", collection="c", embedding_model=embeddings.name, vote=1,
                           cited={private: store.fingerprints([private])[private]}, question="q",
                           question_key=question_key("q"), verified=False, graded_at=utcnow(),
                           sources=[{"n": 1, "title": "vault rotation", "url": "u", "doc_id": private,
                                     "excerpt": SECRET_WORDS}])

    class Signals:
        def nearest(self, vector, **kwargs):
            return [(record, 0.99)]

        def citing(self, doc_ids):
            return []

    ranking = LearnedRanking(signals=Signals(), store=store, collection="c", embedding_model=embeddings.name,
                             prior_weight=0.1, prior_strength=2, association_weight=1.0, min_similarity=0.7)
    retriever = Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10, reranking=ranking)
    found = retriever.search("Where is the vault?", viewer=PUBLIC_VIEWER)
    public = retriever.distinct(found.chunks, question_vector=found.vector, viewer=PUBLIC_VIEWER)
    assert private not in [d.doc_id for d in public]
    member = Viewer.of([f"slack:{PRIVATE}"])
    found = retriever.search("Where is the vault?", viewer=member)
    joined = retriever.distinct(found.chunks, question_vector=found.vector, viewer=member)
    assert private in [d.doc_id for d in joined]
    assert next(d for d in joined if d.doc_id == private).chunks[0].chunk.audiences == (f"slack:{PRIVATE}",)
