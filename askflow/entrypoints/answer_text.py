"""An answer as a person reads it in a terminal: the text, then its numbered sources with their links."""

from __future__ import annotations

from typing import Any

from askflow.domain.model import Answer


def answer_json(answer: Answer) -> dict[str, Any]:
    """The answer's fields as ``GET /requests/{id}`` shows them on a completed request."""
    return {
        "answer": answer.text, "sources": [s.model_dump() for s in answer.sources], "mode": answer.mode,
        "queries": answer.queries, "models": answer.models, "tokens": answer.tokens.model_dump(),
        "timings_ms": answer.timings_ms, "context_turns": answer.context_turns,
        "embedding_model": answer.embedding_model, "collection": answer.collection,
        "cached_from": answer.cached_from, "cache_similarity": answer.cache_similarity,
    }


def format_answer(record: dict[str, Any]) -> str:
    """:param record: an answer's JSON fields (``answer_json``, or a request read over HTTP)."""
    lines = [record.get("answer", ""), "", "Sources:"]
    for source in record.get("sources", []):
        section = f" — {source['section']}" if source.get("section") else ""
        lines.append(f"  [{source['n']}] {source['title']}{section}  {source['url']}")
    if record.get("mode") == "extractive":
        lines += ["", "(extractive mode: no LLM configured; these are quoted passages)"]
    if record.get("mode") == "cached":
        lines += ["", f"(a verified answer to an earlier question, request {record.get('cached_from')}, at "
                      f"similarity {record.get('cache_similarity')}; ask with --fresh for a new one)"]
    return "\n".join(lines)
