"""Links that land on the passage: a docs source's URL points at the section it came from and asks the browser to
highlight the passage (a text fragment, ``#section:~:text=...``: Chromium highlights and scrolls to it; a browser
without them goes to the section, or the page).

Section ids are the ones the usual doc builders give a heading: Sphinx/docutils' ``make_id`` for
reStructuredText, GitHub's and MkDocs' slug for Markdown. Both are a few lines, written here rather than importing
docutils or a Markdown toolchain into the answer path. A page converted from HTML keeps no heading ids, so it gets
the text fragment alone.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import PurePosixPath
from urllib.parse import quote

from askflow.domain.model import SourceKind

_MARKUP = re.compile(r"[`*_:|<>\[\]{}=#\\]|^\s*[-+.]|\.\. ")
_WORDS_IN_FRAGMENT = 8


def rst_id(heading: str) -> str:
    """docutils' ``make_id``: ASCII, lower case, runs of other characters as one hyphen, no leading digit."""
    ascii_heading = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode().lower()
    return re.sub(r"^[-0-9]+|-+$", "", re.sub(r"[^a-z0-9]+", "-", " ".join(ascii_heading.split())))


def markdown_id(heading: str) -> str:
    """GitHub's (and MkDocs' default) heading slug: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", heading.strip().lower()))


def section_anchor(doc_id: str, section: str, anchors: Mapping[str, str] | None = None) -> str | None:
    """The id of the section's own (innermost) heading: the page's own (``anchors``, heading → id, from a web
    page), or as the format the document was written in makes it."""
    heading = section.split(" > ")[-1].strip()
    if not heading:
        return None
    if anchors and heading in anchors:
        return anchors[heading]
    suffix = PurePosixPath(doc_id.split(":", 1)[-1]).suffix.lower()
    if suffix == ".rst":
        return rst_id(heading) or None
    if suffix in (".md", ".mdx", ".markdown"):
        return markdown_id(heading) or None
    return None


def passage_start(excerpt: str) -> str | None:
    """The first words of the excerpt's first line of plain prose (no markup a page renders differently), the
    start of what a text fragment should find."""
    for line in excerpt.splitlines():
        words = line.split()
        if len(words) >= 4 and not _MARKUP.search(line):
            start = " ".join(words[:_WORDS_IN_FRAGMENT])
            return re.split(r"(?<=[.;!?])\s", start)[0].rstrip(".;!?,")
    return None


def passage_link(url: str, *, doc_id: str, kind: str, section: str, excerpt: str,
                 anchors: Mapping[str, str] | None = None) -> str:
    """``url`` pointing at the section and the passage, for documentation; any other source's URL as it is."""
    if kind != SourceKind.DOCS.value or "#" in url:
        return url
    anchor = section_anchor(doc_id, section, anchors) or ""
    start = passage_start(excerpt)
    # in a text directive "-", "," and "&" are syntax: percent-encoded like everything but letters and digits
    fragment = f":~:text={quote(start, safe='').replace('-', '%2D')}" if start else ""
    return f"{url}#{anchor}{fragment}" if anchor or fragment else url
