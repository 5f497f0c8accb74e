"""``askflow eval retrieval --llm``: each question retrieved as the answer path retrieves it (the cheap model's
rewordings, against the loopback OpenAI wire server, searched by keywords and fused with the question's own search),
its rewording calls counted and priced, and a clear error without a chat model."""

from __future__ import annotations

import json

import pytest

from askflow.domain.cost import PriceTable
from askflow.domain.model import Chunk
from askflow.evaluation.retrieval_eval import score_retrieval
from askflow.retrieval.retriever import Retriever
from askflow.service_layer.answering import Answerer
from tests.fakes import FakeVectorStore, HashEmbeddings

CANDIDATES = 2  # per search: a page only a rewording's keywords find stays out of the question's own list
PAGES = {
    "pools.md": "Which pools limit running tasks: pools limit running tasks.",
    "limits.md": "Memory limit per worker.",
    "scheduler.md": "Keep the scheduler running.",
    "groups.md": "Tasks in groups.",
    # shares one word with the questions; the loopback's rewordings add "overview", "how" and "example"
    "tour.md": "A guided tour for newcomers: an overview and an example of pools, how-to style, with pictures.",
}
QUESTIONS = [
    {"id": "tour", "question": "Which pools limit running tasks?", "gold": ["tour.md"]},
    {"id": "pools", "question": "Do pools limit running tasks?", "gold": ["pools.md"]},
]


def loopback_rewordings(question: str) -> list[str]:
    """What tests/support/openai_wire.py rewords a question into."""
    return [f"{question} overview", f"how to {question}", f"{question} example"]


def chat_calls(wire) -> list[dict]:
    return [call["body"] for call in wire.calls if call["path"].endswith("/chat/completions")]


@pytest.fixture
def corpus() -> tuple[FakeVectorStore, Retriever]:
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    chunks = [Chunk(doc_id=f"eval:{page}", index=0, content=text, title=page, section="", url=f"file:///{page}",
                    sha="v1", audiences=("public",)) for page, text in PAGES.items()]
    store.upsert(chunks, embeddings.embed_documents([chunk.embedding_text for chunk in chunks]))
    return store, Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=CANDIDATES)


def rewording_answerer(wire, retriever: Retriever, **settings) -> Answerer:
    from askflow.bootstrap import Components
    from askflow.config import load_settings

    components = Components(load_settings(openai_base_url=wire.base_url, openai_api_key="test-key", **settings))
    return Answerer(retriever=retriever, cheap_model=components.chat_model("gpt-4o-mini"), strong_model=None,
                    rewordings=3, sources=6)


def test_the_llm_evaluation_scores_the_fused_lists_of_each_question_and_its_rewordings(wire, corpus, tmp_path):
    store, retriever = corpus
    plain = score_retrieval(QUESTIONS, retriever, details_path=tmp_path / "plain.jsonl")
    assert chat_calls(wire) == []
    prices = PriceTable({"gpt-4o-mini": [1000.0, 2000.0]})
    summary = score_retrieval(QUESTIONS, retriever, details_path=tmp_path / "llm.jsonl",
                              answerer=rewording_answerer(wire, retriever), prices=prices)

    calls = chat_calls(wire)
    assert len(calls) == len(QUESTIONS)  # one rewording call per question
    assert [call["messages"][-1]["content"].split("Question:\n")[1] for call in calls] == \
        [row["question"] for row in QUESTIONS]
    plain_rows = [json.loads(line) for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]
    for row, question in zip(rows, QUESTIONS, strict=True):
        assert row["reworded_as"] == loopback_rewordings(question["question"])
        searched = [retriever.search(question["question"]).chunks] + [
            store.keyword_search(text, limit=CANDIDATES, audiences=["public"]) for text in row["reworded_as"]]
        assert set(row["top10"]) == {found.chunk.doc_id.split(":", 1)[1] for hits in searched for found in hits}
    # the tour is found by the rewordings' keywords alone: a miss for the question's own search, a hit fused
    assert "tour.md" not in plain_rows[0]["top10"] and "tour.md" in rows[0]["top10"]
    assert (plain["hit@10"], summary["hit@10"]) == (0.5, 1.0)
    assert summary["llm"] is True and summary["rewording_model"] == "gpt-4o-mini" and summary["rewordings"] == 3
    assert summary["reworded"] == summary["reword_calls"] == len(QUESTIONS)
    # the loopback reports a prompt's tokens as its characters / 4
    assert summary["reword_prompt_tokens"] == sum(len(call["messages"][-1]["content"]) // 4 for call in calls)
    assert summary["reword_completion_tokens"] > 0
    assert summary["reword_cost_usd"] == pytest.approx(
        (summary["reword_prompt_tokens"] * 1000 + summary["reword_completion_tokens"] * 2000) / 1e6)
    assert "llm" not in plain and "reworded_as" not in plain_rows[0]


def test_a_question_whose_rewording_fails_is_scored_on_its_own_search_and_counted(wire, corpus, tmp_path):
    store, retriever = corpus
    wire.failures = [500]  # the first question's rewording call, not tried again
    summary = score_retrieval(QUESTIONS, retriever, details_path=tmp_path / "llm.jsonl",
                              answerer=rewording_answerer(wire, retriever, llm_max_attempts=1),
                              prices=PriceTable({"gpt-4o-mini": [1000.0, 2000.0]}))
    rows = [json.loads(line) for line in (tmp_path / "llm.jsonl").read_text().splitlines()]
    assert [row["reworded_as"] for row in rows] == [[], loopback_rewordings(QUESTIONS[1]["question"])]
    assert "tour.md" not in rows[0]["top10"]
    assert (summary["reworded"], summary["reword_calls"], summary["hit@10"]) == (1, 1, 0.5)


def test_eval_retrieval_llm_needs_a_chat_model_and_reports_its_rewordings_and_their_cost(pg_url, collection_name,
                                                                                          wire, tmp_path):
    from tests.test_cli import DOCS, askflow

    questions = tmp_path / "questions.jsonl"
    rows = [{"id": "q1", "question": "How do I pull an XCom?", "gold": ["xcoms.rst"]},
            {"id": "q2", "question": "Disable catchup for old intervals", "gold": ["scheduling.md"]},
            {"id": "q3", "question": "AIRFLOW_CONN environment variable URI", "gold": ["guides/connections.html"]}]
    questions.write_text("\n".join(json.dumps(row) for row in rows))
    args = ["eval", "retrieval", "--corpus", str(DOCS), "--questions", str(questions), "--llm",
            "--details", str(tmp_path / "details.jsonl")]
    env = {"ASKFLOW_DATABASE_URL": pg_url, "ASKFLOW_COLLECTION": collection_name}
    refused = askflow(*args, env=env)
    assert refused.returncode == 2 and refused.stderr.startswith("askflow: --llm needs the chat model")
    assert "ASKFLOW_OPENAI_BASE_URL" in refused.stderr and "ASKFLOW_CHEAP_MODEL" in refused.stderr

    env |= {"OPENAI_BASE_URL": wire.base_url, "OPENAI_API_KEY": "test-key", "ASKFLOW_CHEAP_MODEL": "loopback-mini",
            "ASKFLOW_MODEL_PRICES": json.dumps({"loopback-mini": [1000.0, 2000.0]})}
    run = askflow(*args, env=env)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    calls = chat_calls(wire)
    assert len(calls) == len(rows) and {call["model"] for call in calls} == {"loopback-mini"}
    assert summary["llm"] is True and summary["rewording_model"] == "loopback-mini"
    assert summary["reworded"] == summary["reword_calls"] == len(rows) and summary["questions"] == len(rows)
    assert summary["reword_prompt_tokens"] == sum(len(call["messages"][-1]["content"]) // 4 for call in calls)
    assert summary["reword_cost_usd"] == pytest.approx(
        (summary["reword_prompt_tokens"] * 1000 + summary["reword_completion_tokens"] * 2000) / 1e6, abs=1e-6)
    details = [json.loads(line) for line in (tmp_path / "details.jsonl").read_text().splitlines()]
    assert [row["reworded_as"] for row in details] == [loopback_rewordings(row["question"]) for row in rows]
