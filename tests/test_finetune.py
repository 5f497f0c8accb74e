"""Fine-tuning: training pairs from real-format RST and Markdown, the decision, the atomic switch of model and
collection, and the ``askflow_finetune_embeddings`` DAG under ``dag.test()`` (tiny corpus, a few training steps)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from askflow.bootstrap import bootstrap
from askflow.config import Settings
from askflow.domain.model import Serving
from askflow.finetune.pairs import corpus_pairs, with_hard_negatives
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths
from askflow.service_layer.finetuning import decide
from tests.fakes import FakeVectorStore, HashEmbeddings
from tests.support.dag_runner import run_dag

CORPUS = Path(__file__).parent / "data" / "finetune"
DOCS = Path(__file__).parent / "data" / "docs"


def _pairs_by_kind():
    pairs = corpus_pairs(load_paths([CORPUS], source="docs"), ChunkingStrategy())
    by_kind: dict[str, dict[str, str]] = {}
    for pair in pairs:
        by_kind.setdefault(pair.kind, {})[pair.anchor] = pair.positive
    return pairs, by_kind


def test_pairs_come_from_every_kind_of_structure_in_rst_and_markdown():
    _, by_kind = _pairs_by_kind()
    # a page's title and its opening prose (not the ``.. _label:`` line before the title)
    assert by_kind["title"]["Pools"].startswith("Pools\n\nPools limit the execution parallelism")
    assert by_kind["title"]["Writing DAGs"].startswith("Writing DAGs\n\nA DAG file defines tasks")
    assert by_kind["heading"]["Pools: Assigning tasks to a pool"].startswith("Pools > Assigning tasks to a pool")
    # question-shaped headings, in RST and in Markdown
    assert "pool_slots=2" in by_kind["question"]["How do I give a task more than one slot?"]
    assert "TaskFlow task" in by_kind["question"]["How do I pass data between tasks?"]
    # :ref: to a label, :doc: to a page, a Markdown link: the link text finds the target
    assert by_kind["link"]["a pool of worker slots"].startswith("Pools\n\nPools limit")
    assert by_kind["link"]["the guide to writing DAGs"].startswith("Writing DAGs\n\nA DAG file")
    assert by_kind["link"]["the Markdown notes on deferral"].startswith("Deferrable operators")
    # glossary entries, and nothing from the code block's indented lines
    assert by_kind["definition"]["Slot"].endswith("queues the tasks that ask for one.")
    assert "Default pool" in by_kind["definition"]
    assert not any("task_id" in anchor or "BashOperator" in anchor for anchor in by_kind["definition"])


def test_hard_negatives_are_keyword_matches_from_another_page():
    pairs, _ = _pairs_by_kind()
    store, embeddings = FakeVectorStore(), HashEmbeddings()
    documents = load_paths([CORPUS], source="docs")
    index_documents(documents, store=store, embeddings=embeddings, strategy=ChunkingStrategy(), source="docs")
    completed = with_hard_negatives(pairs, store)
    assert all(pair.negative and pair.negative != pair.positive for pair in completed)
    slot = next(p for p in completed if p.anchor == "How do I give a task more than one slot?")
    assert not slot.negative.startswith("Pools")  # from another page than the positive's


def test_synthetic_questions_come_from_the_cheap_model_once_per_passage(wire, tmp_path):
    from askflow.adapters.openai_wire import OpenAIChatModel, retrying_call
    from askflow.service_layer.finetuning import build_pairs, read_pairs

    model = OpenAIChatModel(client=_openai_client(wire), model="loopback-cheap",
                            retrying=retrying_call(attempts=2, backoff_max_s=0.1))
    documents = load_paths([CORPUS], source="docs")

    def build(limit: int):
        return build_pairs(documents, answers=[], strategy=ChunkingStrategy(), store=FakeVectorStore(),
                           workdir=tmp_path, chat_model=model, synthetic_limit=limit)

    first = build(3)
    synthetic = [p for p in read_pairs(first.path) if p.kind == "synthetic"]
    calls = [c for c in wire.calls if c["path"].endswith("/chat/completions")]
    assert len(synthetic) == 3 and len(calls) == 1  # one batched call for three passages
    assert all(p.anchor.startswith("How does this work:") and p.negative for p in synthetic)
    assert {p.doc_id for p in synthetic} == {"docs:concepts.rst", "docs:guides/deferral.md", "docs:guides/writing.md"}
    wire.failures.extend([500] * 4)  # the model is down: the two new passages get no question, nothing fails
    broken = build(5)
    assert broken.by_kind["synthetic"] == 3 and not broken.reused
    wire.failures.clear()
    more = build(5)  # the three asked before are not asked again
    assert more.by_kind["synthetic"] == 5
    last = [c for c in wire.calls if c["path"].endswith("/chat/completions")][-1]
    assert len(json.loads(last["body"]["messages"][1]["content"])["passages"]) == 2


def _openai_client(wire):
    import openai

    return openai.OpenAI(api_key="test-key", base_url=wire.base_url, max_retries=0, timeout=5)


def test_the_challenger_is_promoted_only_when_it_wins_by_the_margin():
    champion = {"hit@1": 0.3, "hit@3": 0.5, "hit@5": 0.6, "hit@10": 0.7, "mrr@10": 0.40}
    better = champion | {"mrr@10": 0.43}
    assert decide(champion, better, metric="mrr@10", margin=0.02)[0] is True
    assert decide(champion, better, metric="mrr@10", margin=0.05)[0] is False
    promoted, reason = decide(champion, champion | {"mrr@10": 0.38}, metric="mrr@10", margin=0.0)
    assert promoted is False and "current model stays" in reason and "-0.020" in reason


def test_a_question_asked_during_a_switch_is_answered_from_one_model_and_collection(pg_url, minilm, data_dir):
    """The serving pair is read once per question: a switch in the middle of answering changes the next question,
    never the rest of this one."""
    old, new = f"serving_old_{uuid.uuid4().hex[:6]}", f"serving_new_{uuid.uuid4().hex[:6]}"
    settings = Settings(database_url=pg_url, collection=old, embedding_model=minilm.name, serving_refresh_s=0)
    with bootstrap(settings) as components:
        for collection, folder in ((old, DOCS), (new, CORPUS)):
            index_documents(load_paths([folder], source="docs"), store=components.vector_store(collection),
                            embeddings=minilm, strategy=ChunkingStrategy(), source="docs")
        answerer = components.answerer
        embeddings = components.embeddings
        switch = Serving(model=minilm.name, collection=new, base_model=minilm.name, reason="test")
        embed_query = embeddings.embed_query

        def switching_embed_query(text):  # the promotion lands while this question is being embedded
            components.serving_index.switch(switch)
            return embed_query(text)

        embeddings.embed_query = switching_embed_query
        during = answerer.answer("How do pools limit the number of running tasks?")
        embeddings.embed_query = embed_query
        assert during.collection == old
        assert {s.doc_id for s in during.sources} <= {"docs:xcoms.rst", "docs:scheduling.md",
                                                      "docs:guides/connections.html"}
        after = components.answerer.answer("How do pools limit the number of running tasks?")
        assert after.collection == new and after.sources[0].doc_id == "docs:concepts.rst"


@pytest.mark.airflow
def test_the_dag_trains_evaluates_and_promotes_only_a_better_model(airflow_env, local_stack, pg_url, minilm,
                                                                   tmp_path):
    from google.cloud import firestore

    from askflow.dev.local_stack import settings_env

    collection = f"ft_{uuid.uuid4().hex[:8]}"
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"id": "q1", "question": "How many pool slots does a task take?", "gold": ["concepts.rst"]},
        {"id": "q2", "question": "What does catchup=False do when a DAG is unpaused?", "gold": ["scheduling.rst"]},
        {"id": "q3", "question": "How do tasks pass small values to each other?", "gold": ["guides/writing.md"]},
    ]))
    settings = Settings(database_url=pg_url, collection=collection, embedding_model=minilm.name,
                        data_dir=tmp_path / "data", finetune_runs_collection=f"{collection}_runs")
    with bootstrap(settings) as components:
        index_documents(load_paths([CORPUS], source="docs"), store=components.store,
                        embeddings=components.embeddings, strategy=ChunkingStrategy(), source="docs")
    env = {**airflow_env, **local_stack.env, **settings_env(settings)}
    conf = {"docs_location": str(CORPUS), "questions": str(questions), "steps": 2, "batch_size": 4,
            "answers": False}

    def run(**overrides) -> dict:
        assert run_dag("askflow_finetune_embeddings.py", conf | overrides, env) == "success"
        runs = firestore.Client(project=settings.project_id).collection(settings.finetune_runs_collection).stream()
        return max((r.to_dict() for r in runs), key=lambda r: r["started_at"])

    def serving() -> Serving:
        with bootstrap(settings.model_copy(update={"serving_refresh_s": 0})) as components:
            return components.serving()

    kept = run(margin=1.0)  # no model can gain a whole point: the champion stays
    assert kept["trained_now"] is True and kept["promoted"] is False and "current model stays" in kept["decision"]
    assert set(kept["pairs_by_kind"]) == {"title", "heading", "question", "link", "definition"}
    assert kept["challenger"]["steps"] == 2 and kept["challenger"]["cpu_seconds"] > 0
    assert set(kept["champion_metrics"]) >= {"hit@5", "mrr@10"} and set(kept["challenger_metrics"]) >= {"hit@5"}
    assert serving().collection == collection  # nothing changed

    again = run(margin=1.0)  # same corpus and params: the same pairs and the same challenger, not trained again
    assert again["trained_now"] is False and again["pairs_fingerprint"] == kept["pairs_fingerprint"]
    assert again["challenger"]["sha256"] == kept["challenger"]["sha256"]

    promoted = run(margin=-1.0)  # any challenger wins: it is promoted, with a collection of its own
    assert promoted["promoted"] is True and promoted["trained_now"] is False
    now = serving()
    assert now.model == kept["challenger"]["name"] and now.collection != collection
    assert now.previous.model == minilm.name and now.previous.collection == collection
    with bootstrap(settings.model_copy(update={"serving_refresh_s": 0})) as components:
        previous = components.vector_store(collection)
        assert components.store.count() == previous.count()  # all of it, re-embedded
        previous.close()
        answer = components.answerer.answer("How many pool slots does a task take?")
    assert answer.embedding_model == now.model and answer.collection == now.collection
    with bootstrap(settings.model_copy(update={"serving_refresh_s": 0})) as components:
        again = index_documents(load_paths([CORPUS], source="docs"), store=components.store,
                                embeddings=components.embeddings, strategy=ChunkingStrategy(), source="docs")
    assert again.documents_skipped == 4 and again.chunks_written == 0  # promotion left ingestion nothing to redo

    assert run_dag("askflow_finetune_embeddings.py", {"rollback": True}, env) == "success"
    assert (serving().model, serving().collection) == (minilm.name, collection)
