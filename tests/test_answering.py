"""The answerer around the model: citations checked against the sources given, and the verified-answer cache asked
by a follow-up's stand-alone form only."""

from __future__ import annotations

from askflow.domain.model import Source


def test_a_models_citations_name_only_given_sources_in_the_order_it_cites_them():
    from askflow.service_layer.citations import check_citations

    given = [Source(n=n, title=f"S{n}", url=f"https://docs/{n}") for n in range(1, 5)]
    text, sources, removed = check_citations(
        "Pools cap running tasks [3][9]. Slots are units [1]. A pool has a size [9].\n\nSee also [3].", given)
    assert removed == 2
    assert text == "Pools cap running tasks [1]. Slots are units [2]. A pool has a size.\n\nSee also [1]."
    assert [(s.n, s.title, s.cited) for s in sources] == [
        (1, "S3", True), (2, "S1", True), (3, "S2", False), (4, "S4", False)]
    same, unchanged, none_removed = check_citations("No citations at all.", given)
    assert none_removed == 0 and same == "No citations at all." and not any(s.cited for s in unchanged)


def test_the_answerer_drops_a_citation_of_a_source_it_never_gave_and_counts_it():
    from askflow.domain.model import Chunk, Usage
    from askflow.ports import ChatModel, Completion
    from askflow.retrieval.retriever import Retriever
    from askflow.service_layer.answering import Answerer
    from tests.fakes import FakeVectorStore, HashEmbeddings

    store, embeddings = FakeVectorStore(), HashEmbeddings()
    chunks = [Chunk(doc_id=f"docs:{i}", index=0, content=f"Pools limit running tasks, case {i}.", title=f"Pools {i}",
                    section="", url=f"https://docs/{i}", sha="v1") for i in range(4)]
    store.upsert(chunks, embeddings.embed_documents([c.embedding_text for c in chunks]))

    class Model(ChatModel):
        name = "loopback-strong"

        def complete(self, system, user, *, json_output=False):
            return Completion("Pools limit running tasks [9][2].", Usage(self.name))

    answerer = Answerer(retriever=Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10),
                        cheap_model=None, strong_model=Model(), rewordings=0, sources=4)
    answer = answerer.answer("How do pools limit running tasks?")
    assert answer.citations_removed == 1 and answer.text == "Pools limit running tasks [1]."
    assert answer.sources[0].cited and not any(s.cited for s in answer.sources[1:])
    assert [s.n for s in answer.sources] == list(range(1, len(answer.sources) + 1))


def test_a_follow_up_is_looked_up_in_the_cache_by_its_stand_alone_form_never_by_its_own_words():
    import json as json_module

    from askflow.domain.model import Chunk, Usage
    from askflow.ports import ChatModel, Completion
    from askflow.retrieval.retriever import Retriever
    from askflow.service_layer.answering import Answerer
    from tests.fakes import FakeVectorStore, HashEmbeddings

    store, embeddings = FakeVectorStore(), HashEmbeddings()
    chunk = Chunk(doc_id="docs:pools", index=0, content="Pools limit running tasks.", title="Pools", section="",
                  url="https://docs/pools", sha="v1")
    store.upsert([chunk], embeddings.embed_documents([chunk.embedding_text]))

    class Cheap(ChatModel):
        name = "loopback-cheap"

        def complete(self, system, user, *, json_output=False):
            return Completion(json_module.dumps({"queries": ["How do pools limit running tasks in Airflow 3?"]}),
                              Usage(self.name))

    class Cache:
        def __init__(self):
            self.asked = []

        def lookup(self, question, *, vector=None, viewer=None):
            self.asked.append(question)
            return None

    history = [("How do pools limit running tasks?", "Pools cap them [1].")]
    retriever = Retriever(store=store, embeddings=embeddings, alpha=0.5, candidates=10)
    with_model = Cache()
    Answerer(retriever=retriever, cheap_model=Cheap(), strong_model=None, rewordings=1, sources=3,
             cache=with_model).answer("And in Airflow 3?", history)
    assert with_model.asked == ["How do pools limit running tasks in Airflow 3?"]
    without_model = Cache()
    Answerer(retriever=retriever, cheap_model=None, strong_model=None, rewordings=1, sources=3,
             cache=without_model).answer("And in Airflow 3?", history)
    assert without_model.asked == []
    Answerer(retriever=retriever, cheap_model=None, strong_model=None, rewordings=1, sources=3,
             cache=without_model).answer("How do pools limit running tasks?")
    assert without_model.asked == ["How do pools limit running tasks?"]
