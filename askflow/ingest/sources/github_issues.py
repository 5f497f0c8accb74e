"""GitHub issues with their comments as documents, read incrementally, through PyGithub (any base URL: github.com or
Enterprise).

An issue's state goes with every passage of it: its title, which every chunk carries and every citation shows, says
"open", "closed on DATE" or "closed as not planned on DATE", and so does the text's first line, so that retrieval and
the answer can tell a fixed bug from an open one. A closed issue that a merged pull request closed names it too
("closed on DATE, fixed by #12"; the text gives its title and link), as GitHub's REST API links them
(``fixing_pull``: one ``events`` call per closed issue read, one more when a commit closed it). The metadata keeps
state, labels, closed-at, the fixing pull request and ``updated_at``.

What was read is kept with the documents themselves: each stored issue's metadata holds its ``updated_at``, read back
through the vector store (``document_metadata``) by any worker of any run. A run lists the issues updated since the
newest stored one, or since the last run's watermark when that is later (``since=``, least recently updated first, a
page per 30 issues) and reads the comments of those whose ``updated_at`` moved and that have any: no other call per
issue. The watermark (``listed_until``) is the newest ``updated_at`` of everything the listing returned, pull
requests and skipped issues included, which no stored issue records: without it a repository whose pull requests
keep changing would list them all again on every run, since no issue moved. ``since=`` cannot show an issue that was
deleted or transferred: the reconcile (``full``) lists every issue (a page per 30, still no call for an unchanged one)
and prunes the stored ones it no longer shows.

Not indexed: pull requests, the coverage-gap issues askflow files itself (``askflow/adapters/github_gaps.py`` files
them with the label ``ASKFLOW_GITHUB_GAP_LABEL`` and marks their bodies with ``GAP_MARKER``: either leaves one out,
so a gap issue whose body someone rewrote stays out too), and with ``closed_before``, issues closed before that day
(stored ones are pruned).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from askflow.domain.audiences import PUBLIC
from askflow.domain.model import Document, SourceKind

GAP_MARKER = "<!-- askflow-gap:"  # how askflow/adapters/github_gaps.py marks the body of each issue it files
ESCALATION_MARKER = "<!-- askflow-escalation:"  # and askflow/adapters/github_escalations.py each question's issue
_CLOSED_AS = {"not_planned": "closed as not planned", "duplicate": "closed as a duplicate"}
_COMMIT_REPO = re.compile(r"/repos/([^/]+/[^/]+)/commits/")  # a commit's API URL names its repository


@dataclass(frozen=True)
class FixingPull:
    """The pull request whose merge closed an issue."""

    repo: str  # owner/name: the issue's own, or another repository's
    number: int
    title: str
    url: str

    def name(self, repo: str) -> str:
        """``#12`` in ``repo`` itself, ``owner/name#12`` in another repository (as GitHub writes references)."""
        return f"#{self.number}" if self.repo.lower() == repo.lower() else f"{self.repo}#{self.number}"


@dataclass(frozen=True)
class IssueChanges:
    """What one run read of a repository."""

    documents: list[Document]  # issues new or updated since they were stored, least recently updated first
    gone: frozenset[str]  # stored issues to prune: gone from the full listing, closed too long ago, or not to index
    listed: int  # issues the listing returned, pull requests and skipped ones included
    since: str | None  # the ``since=`` the listing asked with: ``None``, every issue
    listed_until: str | None  # the watermark: the newest ``updated_at`` the listing returned (or ``since``)


def read_repo_issues(client, repo: str, *, stored: dict[str, dict[str, Any]], full: bool = False,
                     closed_before: dt.date | None = None, gap_label: str | None = None,
                     listed_until: str | None = None, source: str = "github") -> IssueChanges:
    """The issues of ``repo`` new or updated since ``stored`` (``doc_id -> metadata`` of the repository's stored
    issues), and the stored ones to prune.

    :param full: list every issue (the reconcile), as when nothing is stored.
    :param closed_before: issues closed before this day are not indexed.
    :param gap_label: the label of askflow's coverage-gap issues, which are not indexed (nor are issues whose body
        holds ``GAP_MARKER``).
    :param listed_until: the watermark an earlier run returned (``IssueChanges.listed_until``): the listing starts
        there when that is later than the newest stored issue (only when any is stored: an emptied store is read
        whole).
    """
    since = None if full or not stored else _latest(newest_update(stored), listed_until)
    lazy = client.withLazy(True)  # no call for a repository or a commit itself, only for what is listed of them
    listing = lazy.get_repo(repo).get_issues(
        state="all", sort="updated", direction="asc", **({"since": dt.datetime.fromisoformat(since)} if since else {}))
    documents, kept, skipped, watermark = [], set(), set(), since
    for issue in listing:
        doc_id = f"{source}:{repo}/issues/{issue.number}"
        watermark = _latest(watermark, issue.updated_at.isoformat())
        closed = issue.closed_at.date() if issue.closed_at else None
        # a pull request is listed among issues; its html_url is its /pull/ page (reading ``pull_request`` of an
        # issue that is none would make PyGithub fetch the issue again: a call per issue)
        if "/pull/" in issue.html_url or _filed_by_askflow(issue, gap_label) \
                or (closed_before and closed and closed < closed_before):
            skipped.add(doc_id)
            continue
        kept.add(doc_id)
        if stored.get(doc_id, {}).get("updated_at") != issue.updated_at.isoformat():
            documents.append(_document(issue, repo, doc_id, fixed_by=fixing_pull(lazy, issue, repo)))
    aged = {doc_id for doc_id, metadata in stored.items() if closed_before and metadata.get("closed_at")
            and dt.date.fromisoformat(metadata["closed_at"]) < closed_before}
    gone = (set(stored) - kept if since is None else set(stored) & skipped) | (aged - kept)
    return IssueChanges(documents=documents, gone=frozenset(gone), listed=len(kept | skipped), since=since,
                        listed_until=watermark)


def newest_update(stored: dict[str, dict[str, Any]]) -> str | None:
    """The newest ``updated_at`` of the stored issues (GitHub's ``since`` is inclusive: that issue is listed again,
    and read no further); ``None`` when nothing is stored."""
    return max((m["updated_at"] for m in stored.values() if m.get("updated_at")), key=dt.datetime.fromisoformat,
               default=None)


def _latest(*times: str | None) -> str | None:
    """The latest of ISO times, ``None`` ignored (all ``None``: ``None``)."""
    return max(filter(None, times), key=dt.datetime.fromisoformat, default=None)


def _filed_by_askflow(issue, gap_label: str | None) -> bool:
    """Whether ``issue`` is a coverage gap askflow filed (its label, or its body's marker) or a question it handed
    to the team (its body's marker: an asker's words are never a source)."""
    labelled = bool(gap_label) and any(label.name == gap_label for label in issue.labels)
    return labelled or GAP_MARKER in (issue.body or "") or ESCALATION_MARKER in (issue.body or "")


def fixing_pull(client, issue, repo: str) -> FixingPull | None:
    """The merged pull request that closed ``issue``, as GitHub's REST API links them: the issue's last ``closed``
    event (after any reopening) carries the commit that closed it, none when a person closed it; the pull request
    that commit belongs to is ``commits/{sha}/pulls``, none for a commit pushed directly. Asked only of an issue
    closed as completed: one ``events`` call (a page per 30 events), and one more when a commit closed it.
    ``client``: a lazy PyGithub client (no call for the commit itself)."""
    if issue.state != "closed" or issue.state_reason not in (None, "completed"):
        return None
    closing = None
    for event in issue.get_events():
        if event.event == "closed":
            closing = event
        elif event.event == "reopened":
            closing = None
    if closing is None or not closing.commit_id:
        return None
    named = _COMMIT_REPO.search(closing.commit_url or "")
    commit_repo = named.group(1) if named else repo
    for pull in client.get_repo(commit_repo).get_commit(closing.commit_id).get_pulls():
        if pull.merged_at is not None:
            return FixingPull(repo=commit_repo, number=pull.number, title=pull.title, url=pull.html_url)
    return None


def state_of(issue, repo: str, fixed_by: FixingPull | None = None) -> str:
    """"open", "closed on DATE", "closed on DATE, fixed by #12", or how it was closed when not as completed
    ("closed as not planned on DATE")."""
    if issue.state != "closed":
        return issue.state
    closed = _CLOSED_AS.get(issue.state_reason, "closed")
    state = f"{closed} on {issue.closed_at.date().isoformat()}" if issue.closed_at else closed
    return f"{state}, fixed by {fixed_by.name(repo)}" if fixed_by else state


def _document(issue, repo: str, doc_id: str, *, fixed_by: FixingPull | None) -> Document:
    labels = [label.name for label in issue.labels]
    state = state_of(issue, repo, fixed_by)
    header = f"Issue #{issue.number} in {repo} — {state}" + (f"; labels: {', '.join(labels)}" if labels else "")
    parts = [header]
    if fixed_by:
        parts.append(f"Fixed by pull request {fixed_by.name(repo)}, \"{fixed_by.title}\": {fixed_by.url}")
    parts.append(issue.body or "")
    if issue.comments:
        parts += [f"{c.user.login if c.user else 'someone'}: {c.body}" for c in issue.get_comments()]
    return Document(
        doc_id=doc_id, text="\n\n".join(parts), title=f"#{issue.number} {issue.title} ({state})", url=issue.html_url,
        kind=SourceKind.GITHUB,
        metadata={"format": "text", "repo": repo, "number": issue.number, "state": issue.state,
                  "state_reason": issue.state_reason, "labels": labels,
                  "closed_at": issue.closed_at.date().isoformat() if issue.closed_at else None,
                  "fixed_by": ({"repo": fixed_by.repo, "number": fixed_by.number, "url": fixed_by.url}
                               if fixed_by else None),
                  "updated_at": issue.updated_at.isoformat()},
    )


def repository_audiences(client, repo: str, configured: Mapping[str, Sequence[str]]) -> list[str]:
    """Who may read a repository's issues: what ``configured`` (``ASKFLOW_GITHUB_REPO_AUDIENCES``) names, or else
    ``public`` for a public repository and ``github:<owner/name>`` for a private one (one call to ask which)."""
    if repo in configured:
        return list(configured[repo])
    return [PUBLIC] if not client.get_repo(repo).private else [f"github:{repo.lower()}"]
