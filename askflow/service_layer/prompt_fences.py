"""Retrieved text in a prompt, fenced as data: each passage between ``<source ...>`` and ``</source>`` tags whose
attributes say its number, kind, title and date, in a fence that nothing inside it can close.

A passage (a GitHub issue, a Slack message, a web page) may hold words meant for the model: "ignore your
instructions", or a ``</source>`` followed by a fake system message. The fence holds because every tag-like
``<source`` or ``</source`` (and ``<conversation``, the fence of the conversation so far) in fenced text, in an
attribute or in the question loses its ``<`` to ``&lt;``: the only such tags in a prompt are the ones askflow
wrote. Tag-like means in any case, with spaces or invisible characters (zero-width, soft hyphen) inside, and with
the look-alikes a reader takes for ``<`` and ``/`` (fullwidth ``＜``, ``‹``, ``〈``, the fraction slash) or for the
letters (fullwidth, mathematical: NFKC folds them). Letters from other scripts (a Cyrillic ``ѕ``) are not folded:
that takes a confusables table. Attribute values are escaped as XML attributes and kept to one line; the text
itself is left as it is (code keeps its ``<``), but for those tags.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import unicodedata
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

FENCE_TAGS = ("source", "conversation")
#: the metadata keys that date a passage, as ingestion records them, the most telling first: GitHub's updated_at,
#: a web page's Last-Modified, a git file's commit date, GitHub's closed_at, a Slack thread's ts, front matter's date
DATE_KEYS = ("updated_at", "last_modified", "committed_at", "closed_at", "thread_ts", "date")

_OPENERS = "<\uff1c\ufe64\u2039\u2329\u27e8\u3008\u02c2\u1438"  # < and what reads as it
_SLASHES = "/\uff0f\u2215\u2044\u29f8\\\\"
_OPENER = re.compile(f"[{_OPENERS}]")
#: what a reader (or a model) does not see between the opener and the name: format and control characters,
#: combining marks, separators, and the Hangul fillers (letters that render as nothing)
_UNSEEN_CATEGORIES = frozenset({"Cf", "Cc", "Mn", "Me", "Zs", "Zl", "Zp"})
_FILLERS = "\u115f\u1160\u3164\uffa0"
_LOOKAHEAD = 64  # characters after an opener read to tell what it opens


def fenced(tag: str, text: str, **attributes: Any) -> str:
    """``text`` between ``<tag ...>`` and ``</tag>`` lines, with the ``attributes`` that have a value."""
    if tag not in FENCE_TAGS:
        raise ValueError(f"not a fence tag: {tag!r} (one of {', '.join(FENCE_TAGS)})")
    named = "".join(f' {name}="{_attribute(value)}"' for name, value in attributes.items()
                    if value is not None and value != "")
    return f"<{tag}{named}>\n{defused(text)}\n</{tag}>"


def defused(text: str) -> str:
    """``text`` with every tag-like opening or closing of a fence made inert (its ``<`` written ``&lt;``): an opener
    (``<`` or a look-alike) followed, once every unseen character is dropped and look-alikes folded (NFKD, marks
    removed, NFKC, casefold), by a fence tag's name, with or without a slash."""
    parts, last = [], 0
    for opener in _OPENER.finditer(text):
        if _names_fence(text[opener.end(): opener.end() + _LOOKAHEAD]):
            parts += [text[last:opener.start()], "&lt;"]
            last = opener.end()
    return "".join(parts) + text[last:]


def passage_date(metadata: Mapping[str, Any]) -> str:
    """The date (``YYYY-MM-DD``, UTC) of a passage: from the first of ``DATE_KEYS`` in its chunk's metadata that
    reads as a time (ISO 8601, an HTTP date, or Unix seconds as in a Slack ``ts``); empty when none does."""
    for key in DATE_KEYS:
        when = _as_time(metadata.get(key))
        if when is not None:
            return when.date().isoformat()
    return ""


def _names_fence(following: str) -> bool:
    seen = "".join(c for c in unicodedata.normalize("NFKD", following)
                   if unicodedata.category(c) not in _UNSEEN_CATEGORIES and c not in _FILLERS)
    folded = unicodedata.normalize("NFKC", seen).casefold()
    return folded.lstrip(_SLASHES).startswith(FENCE_TAGS)


def _attribute(value: Any) -> str:
    return defused(html.escape(" ".join(str(value).split()), quote=True))


def _as_time(value: Any) -> dt.datetime | None:
    try:
        if isinstance(value, dt.datetime):
            when = value
        elif isinstance(value, dt.date):
            when = dt.datetime(value.year, value.month, value.day)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            when = dt.datetime.fromtimestamp(value, dt.UTC)
        elif isinstance(value, str) and value.strip():
            when = _parsed(value.strip())
        else:
            return None
    except (OverflowError, OSError, ValueError):
        return None
    if when is None:
        return None
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _parsed(text: str) -> dt.datetime | None:
    """ISO 8601, Unix seconds (a Slack ``ts``) or an HTTP date; ``None`` when it is none of them."""
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        return dt.datetime.fromtimestamp(float(text), dt.UTC)
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
