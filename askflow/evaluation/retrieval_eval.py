"""Retrieval evaluation: hit@k and MRR@10 of the production retrieval code on a corpus and a question set.

The corpus is indexed into the evaluation collection with the configured strategy (incrementally: whatever the
collection held for another corpus or strategy is pruned or re-embedded, so the result equals a fresh index), and
its chunks given their model-written contexts when asked (``--contextual``: a collection of its own). Gold pages are
named by their path relative to the corpus folder. Each question's row of the details file carries, beside its hits,
the confidence and the "not sure" verdict the answerer without a model would give it (``answer_confidence``), so
that the calibration of ``retrieval.confidence`` can be checked on any question set.

With an answerer (``--llm``), each question is retrieved as the answer path retrieves it (``Answerer.retrieve``: the
cheap model's rewordings searched by keywords and fused with the question's own search), so that the figures are the
production pipeline's, not only the LLM-free ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from askflow.config import Settings
from askflow.domain.clock import utcnow
from askflow.domain.cost import PriceTable
from askflow.domain.errors import InvalidInput
from askflow.domain.model import Document, Source, Usage
from askflow.ingest.chunking import ChunkingStrategy
from askflow.ingest.contextual import ContextRun, Contextualizer
from askflow.ingest.indexing import index_documents
from askflow.ingest.sources.files import load_paths
from askflow.ports import Embeddings, VectorStore
from askflow.retrieval.confidence import Confidence, assess
from askflow.retrieval.ranking import RankedDocument
from askflow.retrieval.retriever import RerankStats, Retriever
from askflow.service_layer.answering import Answerer
from askflow.service_layer.extractive import NOTHING_FOUND, extractive_answer

EVAL_SOURCE = "eval"
CUTOFFS = (1, 3, 5, 10)
ANSWER_SOURCES = Settings.model_fields["sources_per_answer"].default  # what the answerer is given by default


def load_questions(path: Path, *, allow_empty: bool = False) -> list[dict]:
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInput(f"{path}:{number}: not JSON ({error.msg})") from error
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(
            row.get("gold"), list
        ):
            raise InvalidInput(f"{path}:{number}: needs a 'question' string and a 'gold' list")
        questions.append(row)
    if not questions and not allow_empty:
        raise InvalidInput(f"{path}: no questions")
    return questions


def score(ranked: Sequence[str], gold: set[str]) -> dict[str, float]:
    first = next((rank for rank, doc in enumerate(ranked[:10], start=1) if doc in gold), None)
    metrics = {f"hit@{k}": float(first is not None and first <= k) for k in CUTOFFS}
    metrics["mrr@10"] = 1.0 / first if first else 0.0
    return metrics


def evaluate(
    *, documents: Sequence[Document], questions: Sequence[dict], store: VectorStore, embeddings: Embeddings,
    retriever: Retriever, strategy: ChunkingStrategy, details_path: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None, contextualizer: Contextualizer | None = None,
    answerer: Answerer | None = None, prices: PriceTable | None = None,
) -> dict[str, float | str]:
    """Index ``documents`` (sourced ``eval``, as ``load_corpus`` gives them) into ``store`` (the evaluation's own
    collection), give their chunks contexts with ``contextualizer`` when one is given (a collection of its own: its
    figures are contextual chunks'), then score ``retriever`` over it (with ``answerer``, an answerer over
    ``retriever``: as the answer path retrieves, its rewording calls priced at ``prices``); per-question rows go to
    ``details_path`` when given, and ``progress`` is told how far the embedding and the scoring are (``(stage, done,
    total)``)."""
    index_documents(documents, store=store, embeddings=embeddings, strategy=strategy, source=EVAL_SOURCE,
                    progress=progress)
    keep_only_the_corpus(store)
    contexts = None
    if contextualizer is not None:
        contexts = contextualizer.run([document.doc_id for document in documents],
                                      run_id=f"eval-{utcnow():%Y%m%dT%H%M%S}")
    summary = score_retrieval(questions, retriever, details_path=details_path, progress=progress, answerer=answerer,
                              prices=prices)
    return summary | (contextual_summary(contexts) if contexts is not None else {})


def keep_only_the_corpus(store: VectorStore) -> None:
    """Delete whatever else the evaluation collection holds (the answers an ``eval feedback`` round stored, which
    take candidate places from pages), so that the figures are the corpus's alone."""
    others = [doc_id for doc_id in store.document_fingerprints(prefix="") if not doc_id.startswith(f"{EVAL_SOURCE}:")]
    if others:
        store.delete_documents(others)
        store.finalize_writes()


def score_retrieval(questions: Sequence[dict], retriever: Retriever, *, details_path: Path | None = None,
                    progress: Callable[[str, int, int], None] | None = None, answerer: Answerer | None = None,
                    prices: PriceTable | None = None) -> dict[str, float | str]:
    """hit@k and MRR@10 of the documentation pages ``retriever`` ranks for each question (stored answers, which
    rank too, are not pages: what they add shows in where the pages they cited rank); with a reranking model, what
    it did (``rerank_summary``). Each question's row (its top pages, hits, ``confidence`` and ``not_sure``: the
    reason the answerer without a model would not be sure, or ``None``) goes to ``details_path`` when given;
    ``progress`` is told ``("scoring questions", scored, total)`` after each one.

    With ``answerer`` (over ``retriever``), each question's documents are the answer path's (``Answerer.retrieve``:
    reworded, searched, fused, distinct), each row names the rewordings searched (``reworded_as``), and the summary
    says what the rewording did and cost at ``prices`` (``llm_summary``)."""
    totals = {key: 0.0 for key in [*(f"hit@{k}" for k in CUTOFFS), "mrr@10"]}
    reranked_before = retriever.rerank_stats
    rows = []
    calls: list[Usage] = []
    reworded = 0
    for row in questions:
        rewordings = None
        if answerer is None:
            found = retriever.search(row["question"])
            documents = retriever.rank(found.chunks, question_vector=found.vector)
        else:
            retrieval = answerer.retrieve(row["question"])
            documents, rewordings = retrieval.documents, retrieval.queries[1:]
            calls += retrieval.usage
            reworded += bool(rewordings)
        ranked = [d.doc_id.split(":", 1)[1] for d in documents if d.doc_id.startswith(f"{EVAL_SOURCE}:")][:10]
        metrics = score(ranked, set(row["gold"]))
        for key, value in metrics.items():
            totals[key] += value
        sure = answer_confidence(row["question"], documents)
        rows.append({"id": row.get("id"), "gold": row["gold"], "top10": ranked, **metrics,
                     "confidence": sure.value, "not_sure": sure.reason or None}
                    | ({"reworded_as": rewordings} if rewordings is not None else {}))
        if progress is not None:
            progress("scoring questions", len(rows), len(questions))
    if details_path is not None:
        details_path.parent.mkdir(parents=True, exist_ok=True)
        details_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary = {"questions": len(questions)}
    summary.update({key: round(value / max(len(questions), 1), 4) for key, value in totals.items()})
    if reranked_before is not None:
        summary.update(rerank_summary(retriever, before=reranked_before))
    if answerer is not None:
        summary.update(llm_summary(answerer, calls, reworded=reworded, prices=prices))
    return summary


def answer_confidence(question: str, documents: Sequence[RankedDocument], *,
                      sources: int = ANSWER_SOURCES) -> Confidence:
    """The confidence the answerer without a model gives ``question`` (``retrieval.confidence.assess``): the top
    document's fused score, and the verdict on its extractive answer from the best passages of the first
    ``sources`` distinct documents of ``documents`` (ranked best first), each passage once."""
    given: list[Source] = []
    seen: set[str] = set()
    for document in documents:
        best = document.chunks[0].chunk
        passage = " ".join(best.content.split())
        if document.repeats is not None or passage in seen:
            continue
        if len(given) == sources:
            break
        seen.add(passage)
        given.append(Source(n=len(given) + 1, title=best.title, url=best.url, doc_id=best.doc_id,
                            section=best.section, kind=best.kind.value, excerpt=best.content))
    text, quoted = extractive_answer(question, given)
    return assess(top_score=documents[0].score if documents else None, sources=quoted, answer_text=text,
                  mode="extractive", nothing_found=NOTHING_FOUND)


def rerank_summary(retriever: Retriever, *, before: RerankStats) -> dict[str, float | str]:
    """What the reranking model did since ``before``: its model, the questions it reordered and those left in the
    fused order (a failure or the time-out: the figures are then partly the fused ranking's), and their cost."""
    after = retriever.rerank_stats
    return {"reranker": retriever.reranker_model, "reranked": after.reranked - before.reranked,
            "rerank_fallbacks": after.fallbacks - before.fallbacks,
            "rerank_cost_usd": round(after.cost_usd - before.cost_usd, 6)}


def llm_summary(answerer: Answerer, calls: Sequence[Usage], *, reworded: int,
                prices: PriceTable | None) -> dict[str, float | str | bool | None]:
    """What the production rewording did: its model and the rewordings asked of each question, the questions whose
    rewordings were searched (``reworded``: the others' call failed or came back empty, and their figures are the
    question's own search's), and the calls, their tokens and their cost at ``prices`` (``None``: not priced)."""
    return {"llm": True, "rewording_model": answerer.rewording_model, "rewordings": answerer.rewordings,
            "reworded": reworded, "reword_calls": len(calls),
            "reword_prompt_tokens": sum(call.prompt_tokens for call in calls),
            "reword_completion_tokens": sum(call.completion_tokens for call in calls),
            "reword_cost_usd": round(prices.cost(calls), 6) if prices is not None else None}


def contextual_summary(run: ContextRun) -> dict[str, float | str]:
    """What giving the corpus's chunks their contexts did: the model, the chunks given one now, those whose stored
    one was kept (an earlier evaluation's), those left past the cap (the figures are then partly plain chunks'), and
    what the calls cost."""
    return {"context_model": run.model, "contextualized": run.contextualized, "contexts_cached": run.cached,
            "contexts_left": run.left, "contextual_cost_usd": round(run.cost_usd, 6)}


def load_corpus(corpus: Path) -> list[Document]:
    return load_paths([corpus], source=EVAL_SOURCE)
