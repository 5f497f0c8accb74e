"""GitHub issues with their comments as documents, through PyGithub (any base URL: github.com or Enterprise).

State, labels and closed-at are kept in the metadata *and* in the text's first line, so that retrieval and the
answer can tell a fixed bug from an open one. The client is PyGithub's, as ``bootstrap`` builds it.
"""

from __future__ import annotations

from askflow.domain.model import Document, SourceKind


def load_repo_issues(client, repo: str, *, source: str = "github") -> list[Document]:
    documents = []
    for issue in client.get_repo(repo).get_issues(state="all"):
        if issue.pull_request is not None:
            continue
        labels = [label.name for label in issue.labels]
        closed = issue.closed_at.date().isoformat() if issue.closed_at else None
        status = f"{issue.state}" + (f" (closed {closed})" if closed else "")
        header = f"Issue #{issue.number} in {repo} — {status}" + (f"; labels: {', '.join(labels)}" if labels else "")
        parts = [header, issue.body or ""]
        parts += [f"{c.user.login if c.user else 'someone'}: {c.body}" for c in issue.get_comments()]
        documents.append(
            Document(
                doc_id=f"{source}:{repo}/issues/{issue.number}", text="\n\n".join(parts),
                title=f"#{issue.number} {issue.title}", url=issue.html_url, kind=SourceKind.GITHUB,
                metadata={"format": "text", "repo": repo, "number": issue.number, "state": issue.state,
                          "labels": labels, "closed_at": closed},
            )
        )
    return documents
