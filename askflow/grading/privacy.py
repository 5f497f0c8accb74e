"""Secret and personal-data patterns: a match makes an answer private whatever a grader thinks."""

from __future__ import annotations

import re

PRIVATE_PATTERNS = {
    "api key": re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|gh[pousr]_[A-Za-z0-9]{20,}"
                          r"|xox[abpr]-[A-Za-z0-9-]{10,})\b"),
    "password": re.compile(r"(?i)\b(password|passwd|pwd|secret|token)\s*[:=]\s*\S{4,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "email address": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    # not a date or a timestamp (2022-03-24, 2022-03-24 16:52): log lines are full of them
    "phone number": re.compile(r"(?<!\w)(?!\d{4}-\d\d-\d\d(?!\d))\+?\d[\d ().-]{8,}\d(?!\w)"),
    "credentials in URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@"),
}


def private_findings(*texts: str, published: str = "") -> list[str]:
    """Names of the private-data patterns found in the texts; a match that the ``published`` text (the cited
    documentation) contains verbatim is an example from the docs, not a leak."""
    return [
        name for name, pattern in PRIVATE_PATTERNS.items()
        if any(match.group(0) not in published for text in texts for match in pattern.finditer(text or ""))
    ]
