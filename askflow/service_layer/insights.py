"""What are people asking: a period's question-insights report, built from the stored requests, saved (one per
period: a rerun replaces it), rendered to HTML and CSV, and its coverage gaps optionally filed as issues."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import numpy as np

from askflow.domain.audiences import ADMIN, PUBLIC_VIEWER, Viewer
from askflow.domain.clock import utcnow
from askflow.domain.errors import InvalidInput
from askflow.insights.model import InsightsReport, Page
from askflow.insights.render import csv_text, html_page
from askflow.insights.report import AskedQuestion, Progress, build_report
from askflow.ports import ChatModel, Embeddings, GapIssues, InsightsReports, LearnedSignals, ReportFiles, RequestStore
from askflow.retrieval.query import clean_query
from askflow.retrieval.retriever import Retriever

log = logging.getLogger(__name__)
EMBED_BATCH = 256


def period_ending(end: dt.datetime | None, period: dt.timedelta) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the period ending at ``end`` (default: now, to the hour, so a rerun within the hour is the
    same period)."""
    end = end or utcnow().replace(minute=0, second=0, microsecond=0)
    return end - period, end


def asked_between(requests: RequestStore, start: dt.datetime, end: dt.datetime) -> list[AskedQuestion]:
    """The answered or failed questions of the period (one still being answered is left for the next report)."""
    return [AskedQuestion.of(request) for request in requests.created_between(start, end) if request.terminal]


def build_insights(
    *, requests: RequestStore, embeddings: Embeddings, retriever: Retriever, signals: LearnedSignals | None,
    namer: ChatModel | None, reports: InsightsReports, files: ReportFiles | None, start: dt.datetime,
    end: dt.datetime, min_cluster_size: int, cluster_selection: str = "leaf", low_confidence: float,
    low_similarity: float, gap_share: float, assign_similarity: float,
    progress: Progress = lambda stage, done, total: None,
) -> InsightsReport:
    if start >= end:
        raise InvalidInput("the period must end after it starts")
    if min_cluster_size < 2:
        raise InvalidInput("minimum cluster size: at least 2")
    progress("read", 0, 1)
    asked = asked_between(requests, start, end)
    previous = asked_between(requests, start - (end - start), start)
    progress("read", 1, 1)
    log.info("insights %s..%s: %d questions, %d the period before", start, end, len(asked), len(previous))

    def question_vectors(questions: Sequence[AskedQuestion]) -> np.ndarray:
        """Stored embeddings of the questions where the learning loop kept them, the rest embedded in batches."""
        stored = signals.question_vectors([q.request_id for q in questions], embedding_model=embeddings.name) \
            if signals is not None else {}
        missing = [q for q in questions if q.request_id not in stored]
        for first in range(0, len(missing), EMBED_BATCH):
            batch = missing[first:first + EMBED_BATCH]
            made = embeddings.embed_documents([clean_query(q.question).dense for q in batch])
            stored |= {q.request_id: vector for q, vector in zip(batch, made, strict=True)}
            progress("embed", first + len(batch), len(missing))
        return np.asarray([stored[q.request_id] for q in questions], dtype=np.float32)

    def embed_texts(texts: Sequence[str]) -> np.ndarray:
        vectors = []
        for first in range(0, len(texts), EMBED_BATCH):
            vectors += embeddings.embed_documents(list(texts[first:first + EMBED_BATCH]))
        return np.asarray(vectors, dtype=np.float32)

    def closest_pages(label: str, centre: np.ndarray, viewer: Viewer = PUBLIC_VIEWER) -> list[Page]:
        """The pages nearest a gap that ``viewer`` may read: the public's for the report, an admin's for its admin
        view."""
        found = retriever.search(label, vector=centre.tolist(), viewer=viewer)
        documents = retriever.distinct(found.chunks, question_vector=found.vector, viewer=viewer)
        return [Page(title=d.chunks[0].chunk.title, url=d.chunks[0].chunk.url, doc_id=d.chunks[0].chunk.doc_id)
                for d in documents[:3]]

    report = build_report(
        asked, previous=previous, start=start, end=end, vectors=question_vectors, embed_texts=embed_texts,
        closest_pages=closest_pages, namer=namer, embedding_model=embeddings.name, min_cluster_size=min_cluster_size,
        cluster_selection=cluster_selection, low_confidence=low_confidence, low_similarity=low_similarity,
        gap_share=gap_share, assign_similarity=assign_similarity, built_at=utcnow(), progress=progress,
        admin_closest_pages=lambda label, centre: closest_pages(label, centre, ADMIN))
    if files is not None:
        report = report.model_copy(update={"files": {
            "html": files.write(f"{report.report_id}.html", html_page(report).encode(), content_type="text/html"),
            "csv": files.write(f"{report.report_id}.csv", csv_text(report).encode(), content_type="text/csv"),
        }})
    reports.save(report)
    return report


def file_gaps(report: InsightsReport, *, issues: GapIssues) -> dict[str, int]:
    """File each of the report's coverage gaps (updating the issue of a gap filed before)."""
    outcome = {"filed": 0, "updated": 0}
    for gap in report.gaps:
        outcome[issues.file(gap, report=report)] += 1
    return outcome
