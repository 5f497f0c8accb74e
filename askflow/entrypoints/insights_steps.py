"""The question-insights run over the components, as ``askflow insights`` runs it and the
``askflow_question_insights`` DAG runs it as tasks: build (and save) the report, then file its gaps. Only the
report's id and figures go through XCom; the report itself is in Firestore."""

from __future__ import annotations

import datetime as dt
from typing import Any

from askflow.insights.model import InsightsReport, parse_period
from askflow.insights.report import Progress
from askflow.service_layer import insights


def build(components, *, period: str, end: dt.datetime | None = None, min_cluster_size: int | None = None,
          progress: Progress = lambda stage, done, total: None) -> InsightsReport:
    s = components.settings
    start, end = insights.period_ending(end, parse_period(period))
    retriever, _ = components.docs_for_agents()
    return insights.build_insights(
        requests=components.requests, embeddings=components.embeddings, retriever=retriever,
        signals=components.signals, namer=components.chat_model(s.cheap_model), reports=components.insights_reports,
        files=components.report_files, start=start, end=end,
        min_cluster_size=min_cluster_size or s.insights_min_cluster_size,
        cluster_selection=s.insights_cluster_selection, low_confidence=s.confidence_weak_match,
        low_similarity=s.insights_low_confidence,
        gap_share=s.insights_gap_share, assign_similarity=s.insights_assign_similarity, progress=progress)


def summary(report: InsightsReport) -> dict[str, Any]:
    return {"report_id": report.report_id, "requests": report.requests, "clusters": len(report.clusters),
            "noise": report.noise, "gaps": [gap.title for gap in report.gaps], "files": report.files}


def file_gaps(components, report_id: str) -> dict[str, int]:
    report = components.insights_reports.get(report_id)
    if report is None:
        raise LookupError(f"no insights report {report_id}")
    return insights.file_gaps(report, issues=components.gap_issues())
