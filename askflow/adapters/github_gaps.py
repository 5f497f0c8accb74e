"""Coverage gaps filed as GitHub issues in the docs repository (PyGithub, any base URL): one issue per gap, labelled
``ASKFLOW_GITHUB_GAP_LABEL`` and found again by a marker in its body, so a rerun updates the issue instead of filing a
second (and the GitHub ingestion, by either, never indexes it)."""

from __future__ import annotations

from typing import Any

from askflow.insights.model import CoverageGap, InsightsReport
from askflow.ports import GapIssues


def marker(gap: CoverageGap) -> str:
    return f"<!-- askflow-gap: {gap.key} -->"


def issue_body(gap: CoverageGap, report: InsightsReport) -> str:
    pages = "\n".join(f"- [{page.title}]({page.url})" for page in gap.closest_pages) or "- (none found)"
    return (f"{gap.finding}\n\n**Pages closest to it**\n{pages}\n\n"
            f"Found by askflow's question insights for {report.period_start:%Y-%m-%d} to "
            f"{report.period_end:%Y-%m-%d} (report `{report.report_id}`).\n\n{marker(gap)}")


class GitHubGapIssues(GapIssues):
    def __init__(self, *, client: Any, repo: str, label: str) -> None:
        self._client = client
        self._repo = repo
        self._label = label
        self._filed: dict[str, Any] | None = None  # marker -> issue, read once per run

    def _existing(self) -> dict[str, Any]:
        if self._filed is None:
            repo = self._client.get_repo(self._repo)
            self._filed = {}
            for issue in repo.get_issues(state="all", labels=[self._label]):
                for line in (issue.body or "").splitlines():
                    if line.startswith("<!-- askflow-gap:"):
                        self._filed[line.strip()] = issue
        return self._filed

    def file(self, gap: CoverageGap, *, report: InsightsReport) -> str:
        title = f"Docs gap: {gap.title} ({gap.askers} questions)"
        existing = self._existing().get(marker(gap))
        if existing is not None:
            existing.edit(title=title, body=issue_body(gap, report))
            return "updated"
        issue = self._client.get_repo(self._repo).create_issue(title=title, body=issue_body(gap, report),
                                                               labels=[self._label])
        self._existing()[marker(gap)] = issue
        return "filed"
