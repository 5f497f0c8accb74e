"""The forms a question takes for search: what pasted logs and tracebacks add is stripped, and code identifiers
are kept for the keyword side only."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LOG_LINE = re.compile(
    r"^\s*(\[?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|Traceback \(most recent call last\)|File \".*\", line \d+|"
    r"at [\w.$]+\(|\w+Error:|INFO|WARNING|ERROR|DEBUG)"
)
_NOISE = re.compile(r"(https?://\S+|/[\w./-]{12,}|\b[0-9a-f]{12,}\b|\b\d{2}:\d{2}:\d{2}[.,]?\d*\b)")
_DENSE_QUERY_CHARS = 700


@dataclass(frozen=True)
class Query:
    """The forms one question takes for search: prose for the dense side, prose plus identifiers for keywords."""

    dense: str
    keywords: str


def clean_query(question: str) -> Query:
    """Strip what pasted logs and tracebacks add (timestamps, paths, hashes) and keep code identifiers only for
    the keyword side: they name operators and options exactly, but drown a sentence embedding."""
    lines = question.strip().splitlines()
    prose: list[str] = []
    code: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        if _LOG_LINE.match(line):
            code.append(_NOISE.sub(" ", line))
        elif line.startswith(("    ", "\t")) or line.strip().startswith(("```", ">>>", "$ ")):
            code.append(_NOISE.sub(" ", line))
        else:
            prose.append(_NOISE.sub(" ", line.strip()))
    prose_text = " ".join(prose) or " ".join(code)
    identifiers = " ".join(dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", " ".join(code))))
    return Query(dense=prose_text[:_DENSE_QUERY_CHARS], keywords=f"{prose_text} {identifiers}".strip())
