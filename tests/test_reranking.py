"""Reranking: a model reorders the fused top documents (the Cohere-compatible ``/v1/rerank`` and the Vertex AI
ranking API, against loopback servers in their wire formats), falls back to the fused order on a failure or past
its time-out, never sees withheld audiences' text, is priced (each request's cost counts its reranking), and measured
by ``askflow eval retrieval --rerank``."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from askflow.domain.audiences import PUBLIC_VIEWER, Viewer
from askflow.domain.cost import PriceTable, RerankPrice, RerankUsage
from askflow.domain.model import Chunk
from askflow.retrieval.retriever import ModelReranking, Retriever
from tests.fakes import FakeVectorStore, HashEmbeddings
from tests.support.rerank_wire import CohereRerankServer, VertexRankServer

QUESTION = "How do pools limit running tasks?"
NAMES = ["alpha", "bravo", "charlie", "delta", "echo"]


def pool_docs(store: FakeVectorStore, embeddings: HashEmbeddings,
              audiences: dict[str, tuple[str, ...]] | None = None) -> None:
    """Five documents about pools, each matching the question a little less than the one before."""
    audiences = audiences or {}
    chunks = []
    for rank, name in enumerate(NAMES):
        content = f"Pools limit running tasks the {name} way." + " Pools help." * (len(NAMES) - rank)
        chunks.append(Chunk(doc_id=f"docs:{name}", index=0, content=content, title=f"Pools {name}",
                            section="Limits", url=f"https://docs/{name}", sha="v1",
                            audiences=audiences.get(name, ("public",))))
    store.upsert(chunks, embeddings.embed_documents([c.embedding_text for c in chunks]))


def ranked_ids(retriever: Retriever, viewer: Viewer = PUBLIC_VIEWER) -> list[str]:
    found = retriever.search(QUESTION, viewer=viewer)
    return [d.doc_id for d in retriever.rank(found.chunks, question_vector=found.vector, viewer=viewer)]


def retrievers(reranker, *, top_n: int = 4, timeout_s: float = 2.0, max_attempts: int = 2,
               withheld: tuple[str, ...] = (), audiences: dict[str, tuple[str, ...]] | None = None):
    """(without reranking, with it) over the same five documents."""
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    pool_docs(store, embeddings, audiences)
    reranking = ModelReranking(reranker=reranker, top_n=top_n, max_chars=300, timeout_s=timeout_s,
                               max_attempts=max_attempts, withheld_audiences=withheld,
                               prices=PriceTable({"rerank-v3.5": RerankPrice(per_1k_searches=2.0)}))
    return (Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10),
            Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10, model_reranking=reranking))


def the_servers_order(fused: list[str], preferred: list[str], top_n: int) -> list[str]:
    """What the loopback server makes of the fused top ``top_n``: the preferred first, the others reversed; the rest
    below as they were."""
    top = fused[:top_n]
    return ([d for d in preferred if d in top] + [d for d in reversed(top) if d not in preferred]
            + fused[top_n:])


@pytest.fixture
def cohere():
    server = CohereRerankServer()
    yield server
    server.stop()


@pytest.fixture
def vertex():
    server = VertexRankServer(project="askflow-test")
    yield server
    server.stop()


def test_the_cohere_reranker_built_from_settings_reorders_the_fused_top_documents_as_the_server_says(
        cohere, monkeypatch):
    from askflow import tracing
    from askflow.bootstrap import Components
    from askflow.config import load_settings

    spans = []

    class Span:
        def __init__(self, name, attributes):
            self.name, self.attributes = name, dict(attributes)

    def recording_span(name, *, kind="internal", parent=None, links=(), attributes=None):
        import contextlib

        @contextlib.contextmanager
        def opened():
            spans.append(Span(name, attributes or {}))
            yield spans[-1]
        return opened()

    monkeypatch.setattr(tracing, "span", recording_span)
    monkeypatch.setattr(tracing, "annotate", lambda current, attributes: current.attributes.update(attributes))
    settings = load_settings(reranker="cohere", rerank_url=cohere.rerank_url, rerank_api_key="loopback-key",
                             rerank_top_n=4, rerank_max_chars=300)
    components = Components(settings)
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    pool_docs(store, embeddings)
    fused = ranked_ids(components.retriever_for(store, embeddings))
    assert cohere.calls == []  # the evaluation's default: no reranking unless asked
    cohere.prefer = ["echo", "charlie"]
    retriever = components.retriever_for(store, embeddings, rerank=True)
    reranked = ranked_ids(retriever)

    assert reranked == the_servers_order(fused, ["docs:echo", "docs:charlie"], 4) != fused
    (call,) = cohere.calls
    assert call["headers"]["Authorization"] == "Bearer loopback-key"
    assert call["body"]["model"] == "rerank-v3.5" and call["body"]["query"] == QUESTION
    documents = call["body"]["documents"]
    assert len(documents) == 4 and all(len(d) <= 300 + 2 for d in documents)  # title, blank line, passages
    assert documents[0].startswith(f"Pools {fused[0].split(':')[1]}\n\nLimits\n")
    assert retriever.rerank_stats.reranked == 1 and retriever.rerank_stats.fallbacks == 0
    assert retriever.rerank_stats.cost_usd == pytest.approx(2.0 / 1000)  # one search at $2 per 1,000
    (span,) = [s for s in spans if s.name.startswith("rerank")]
    assert span.name == "rerank rerank-v3.5" and span.attributes["askflow.rerank.documents"] == 4
    assert span.attributes["askflow.rerank.outcome"] == "reranked"
    components.close()


def test_the_vertex_ranking_api_built_from_settings_reorders_the_fused_top_documents_as_it_says(
        vertex, monkeypatch):
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError

    from askflow.bootstrap import Components
    from askflow.config import load_settings
    from askflow.domain.errors import ConfigurationError

    settings = load_settings(reranker="vertex", vertex_ranking_url=vertex.base_url, project_id="askflow-test",
                             rerank_top_n=5)

    def no_credentials(scopes=None):
        raise DefaultCredentialsError("none here")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(ConfigurationError, match="ASKFLOW_RERANKER=vertex needs Google credentials"):
        _ = Components(settings).reranker
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (AnonymousCredentials(), "askflow-test"))
    components = Components(settings)
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    pool_docs(store, embeddings)
    fused = ranked_ids(components.retriever_for(store, embeddings))
    vertex.prefer = ["delta"]
    assert ranked_ids(components.retriever_for(store, embeddings, rerank=True)) == \
        the_servers_order(fused, ["docs:delta"], 5) != fused
    (call,) = vertex.calls
    assert call["body"]["model"] == "semantic-ranker-default-004" and call["body"]["query"] == QUESTION
    records = call["body"]["records"]
    assert [r["id"] for r in records] == fused
    assert records[0]["title"] == f"Pools {fused[0].split(':')[1]}" and "Pools limit" in records[0]["content"]
    components.close()


def test_a_failing_reranker_is_retried_then_the_fused_order_stands_and_the_answer_is_given(cohere, caplog):
    from askflow.adapters.cohere_rerank import CohereReranker
    from askflow.service_layer.answering import Answerer

    plain, reranking = retrievers(CohereReranker(client=httpx.Client(), url=cohere.rerank_url, model="rerank-v3.5"),
                                  top_n=5, max_attempts=2)
    cohere.prefer = ["echo"]
    cohere.failures = [500, 500]
    answer = Answerer(retriever=reranking, cheap_model=None, strong_model=None, rewordings=0,
                      sources=5).answer(QUESTION)
    expected = Answerer(retriever=plain, cheap_model=None, strong_model=None, rewordings=0,
                        sources=5).answer(QUESTION)
    assert answer.sources and [s.doc_id for s in answer.sources] == [s.doc_id for s in expected.sources]
    assert len(cohere.calls) == 2  # tried again once, then given up
    assert reranking.rerank_stats.fallbacks == 1 and reranking.rerank_stats.reranked == 0
    assert "the fused order stands" in caplog.text and "ModelUnavailable" in caplog.text
    assert ranked_ids(reranking)[0] == "docs:echo"  # the server is back: the next question is reranked


def test_a_slow_reranker_falls_back_to_the_fused_order_within_its_time_out(cohere):
    from askflow.adapters.cohere_rerank import CohereReranker
    from askflow.service_layer.answering import Answerer

    plain, reranking = retrievers(CohereReranker(client=httpx.Client(), url=cohere.rerank_url, model="rerank-v3.5"),
                                  timeout_s=0.3, max_attempts=3)
    fused = ranked_ids(plain)
    cohere.prefer, cohere.delay_s = ["echo"], 2.0
    started = time.monotonic()
    answer = Answerer(retriever=reranking, cheap_model=None, strong_model=None, rewordings=0,
                      sources=5).answer(QUESTION)
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + 0.4, elapsed  # the time-out bounds every attempt together, not each
    assert [s.doc_id for s in answer.sources] == fused
    assert reranking.rerank_stats.fallbacks == 1


def test_documents_of_withheld_audiences_are_never_sent_and_keep_their_fused_places(cohere):
    from askflow.adapters.cohere_rerank import CohereReranker

    audiences = {"bravo": ("employees",), "delta": ("slack:C0123", "public")}
    plain, reranking = retrievers(CohereReranker(client=httpx.Client(), url=cohere.rerank_url, model="rerank-v3.5"),
                                  top_n=5, withheld=("employees", "slack:*"), audiences=audiences)
    viewer = Viewer.of(["employees", "slack:C0123"])
    fused = ranked_ids(plain, viewer)
    cohere.prefer = ["echo"]
    reranked = ranked_ids(reranking, viewer)

    (call,) = cohere.calls
    sent = "\n".join(call["body"]["documents"])
    assert "bravo" not in sent and "delta" not in sent and len(call["body"]["documents"]) == 3
    for withheld in ("docs:bravo", "docs:delta"):
        assert reranked.index(withheld) == fused.index(withheld)
    others = [d for d in fused if d not in ("docs:bravo", "docs:delta")]
    assert [d for d in reranked if d in others] == ["docs:echo"] + [d for d in reversed(others) if d != "docs:echo"]


def test_rerank_prices_count_searches_of_up_to_so_many_documents_or_tokens():
    prices = PriceTable({"rerank-v3.5": {"per_1k_searches": 2.0, "documents_per_search": 100},
                         "semantic-ranker-default-004": RerankPrice(per_1k_searches=1.0),
                         "rerank-2.5": [0.05], "gpt-4o": [2.5, 10.0]})
    assert prices.rerank_cost([RerankUsage("rerank-v3.5", documents=30)]) == pytest.approx(0.002)
    assert prices.rerank_cost([RerankUsage("rerank-v3.5", documents=150)]) == pytest.approx(0.004)
    assert prices.rerank_cost([RerankUsage("semantic-ranker-default-004", documents=100)] * 3) == pytest.approx(0.003)
    assert prices.rerank_cost([RerankUsage("rerank-2.5", documents=30, tokens=20_000)]) == pytest.approx(0.001)
    assert prices.rerank_cost([RerankUsage("unpriced-reranker", documents=30)]) == 0.0


def test_eval_retrieval_with_rerank_measures_the_configured_reranker(pg_url, collection_name, tmp_path):
    from tests.test_cli import DOCS, askflow

    server = CohereRerankServer()
    server.prefer = ["connections"]  # the reranker puts the connections guide first for every question
    try:
        questions = tmp_path / "questions.jsonl"
        questions.write_text("\n".join(json.dumps(row) for row in [
            {"id": "q1", "question": "How do I pull an XCom?", "gold": ["xcoms.rst"]},
            {"id": "q2", "question": "Disable catchup for old intervals", "gold": ["scheduling.md"]},
            {"id": "q3", "question": "AIRFLOW_CONN environment variable URI", "gold": ["guides/connections.html"]},
        ]))
        env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
        refused = askflow("eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), "--rerank",
                          env=env)
        assert refused.returncode == 2 and "ASKFLOW_RERANKER" in refused.stderr

        env |= {"ASKFLOW_RERANKER": "cohere", "ASKFLOW_RERANK_URL": server.rerank_url}
        plain = askflow("eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions),
                        "--details", str(tmp_path / "plain.jsonl"), env=env)
        assert plain.returncode == 0, plain.stderr
        assert server.calls == [] and "reranker" not in json.loads(plain.stdout.strip().splitlines()[-1])
        run = askflow("eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), "--rerank",
                      "--details", str(tmp_path / "reranked.jsonl"), env=env)
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert len(server.calls) == 3 and summary["reranked"] == 3 and summary["rerank_fallbacks"] == 0
        assert summary["reranker"] == "rerank-v3.5" and summary["rerank_cost_usd"] == pytest.approx(0.006)
        rows = [json.loads(line) for line in (tmp_path / "reranked.jsonl").read_text().splitlines()]
        assert [r["top10"][0] for r in rows] == ["guides/connections.html"] * 3
        assert summary["hit@1"] == round(1 / 3, 4)  # the connections question alone finds its page first
    finally:
        server.stop()


def test_a_requests_cost_includes_what_reranking_its_documents_cost(cohere):
    from askflow.adapters.memory import InMemoryRequestStore
    from askflow.bootstrap import Components
    from askflow.config import load_settings
    from askflow.domain.messages import QuestionQueued
    from askflow.service_layer import handlers
    from askflow.service_layer.answering import Answerer
    from askflow.service_layer.commands import AskQuestion
    from tests.fakes import FakeEventBus

    settings = load_settings(reranker="cohere", rerank_url=cohere.rerank_url, rerank_top_n=4,
                             model_prices={"rerank-v3.5": {"per_1k_searches": 50.0}, "hash-embeddings": [0.0]})
    components = Components(settings)
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    pool_docs(store, embeddings)
    cohere.prefer = ["echo"]
    answerer = Answerer(retriever=components.retriever_for(store, embeddings, rerank=True), cheap_model=None,
                        strong_model=None, rewordings=0, sources=5)
    requests = InMemoryRequestStore()
    request, _ = handlers.submit_question(AskQuestion(question=QUESTION), requests=requests, events=FakeEventBus(),
                                          settings=settings, asker_token="browser-token-0123456789abcdef")

    assert handlers.answer_request(QuestionQueued(request_id=request.request_id), requests=requests,
                                   answerer=answerer, settings=settings) == "complete"
    stored = requests.get(request.request_id)
    assert len(cohere.calls) == 1 and stored.sources[0].doc_id == "docs:echo"  # reranked: the model's first
    assert stored.cost_usd == pytest.approx(50.0 / 1000)  # an extractive answer: its one rerank search alone
    components.close()
