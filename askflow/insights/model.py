"""What a question-insights report holds: the period's clusters of questions and its coverage gaps."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, Field

from askflow.domain.errors import InvalidInput

#: an answer that admits it has none (the answer prompt asks the model to say it does not know)
DONT_KNOW = re.compile(r"(?i)\b(do not|don't|cannot|can't|could not|couldn't) (know|find|answer)\b|"
                       r"\bnot (in|covered by) the (provided )?sources\b")
PRIVATE_QUESTION = "[a question with private data, not shown]"


class Page(BaseModel):
    title: str
    url: str
    doc_id: str
    count: int = 0  # how many of the cluster's answers cited it (0: found by search, not cited)


class ClusterInsight(BaseModel):
    cluster: int
    label: str  # its distinctive words (c-TF-IDF)
    name: str | None = None  # a one-line name from the cheap model, when one is configured
    size: int
    previous_size: int  # the previous period's questions nearest this cluster
    daily: list[int]  # questions per day of the period
    representatives: list[str]  # the questions nearest its centre (private ones masked)
    rated_up: int
    rated_down: int
    failed_share: float
    dont_know_share: float
    low_confidence_share: float
    confidence: float | None  # mean similarity of a question to its answer's top source
    unanswered_share: float  # rated down, failed, "don't know" or low confidence
    top_pages: list[Page]
    gap: bool

    @property
    def title(self) -> str:
        return self.name or self.label


class CoverageGap(BaseModel):
    key: str  # stable across runs: the cluster's distinctive words
    cluster: int
    title: str
    askers: int
    unanswered_share: float
    finding: str
    closest_pages: list[Page]


class InsightsReport(BaseModel):
    report_id: str  # the period: a rerun for the same period replaces the report
    period_start: dt.datetime
    period_end: dt.datetime
    built_at: dt.datetime
    requests: int
    clustered: int
    noise: int
    previous_requests: int
    min_cluster_size: int
    embedding_model: str
    naming: str  # "terms" or the chat model that named the clusters
    low_confidence: float
    gap_share: float
    clusters: list[ClusterInsight]
    gaps: list[CoverageGap]
    files: dict[str, str] = {}  # format -> where the HTML and CSV renderings were written
    # the same clusters for admins: questions not asked in public shown, the labels and names made of every
    # question's words, every cited page and the pages closest to a gap that only admins may read. Never dumped
    # with the report (the CLI's JSON, the renderings): only its store keeps it (``document``)
    admin_view: InsightsReport | None = Field(default=None, exclude=True)

    def document(self) -> dict[str, Any]:
        """The report as its store keeps it: with its admin view."""
        return self.model_dump(mode="json") | {
            "admin_view": self.admin_view.model_dump(mode="json") if self.admin_view is not None else None}


def report_id(start: dt.datetime, end: dt.datetime) -> str:
    return f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}"


def parse_period(text: str) -> dt.timedelta:
    """``7d``, ``24h``, ``2w``: a period the CLI and the DAG take."""
    match = re.fullmatch(r"\s*(\d{1,4})\s*([hdw])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(f"period {text!r}: a number and a unit, h, d or w (7d, 24h, 2w)")
    number, unit = int(match.group(1)), match.group(2)
    return dt.timedelta(hours=number) if unit == "h" else dt.timedelta(days=number * (7 if unit == "w" else 1))
