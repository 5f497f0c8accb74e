"""Who may see what: audiences, viewers and the readers of what askflow derives from its sources.

An **audience** is a name: ``public`` (anyone), a name the deployment defines (``employees``, ``customers``), or one
derived from a source (``slack:<channel id>``: the members of a private channel). Every stored chunk carries the
audiences that may read it; a chunk stored before audiences existed carries none and is read by admins only.

A **viewer** is whoever an answer is shown to: its audiences (``public`` always among them) or, for an admin, no
restriction. A viewer may read what names ``public`` or any of the viewer's audiences.

The **readers** of something derived from several sources (an answer, a stored answer, a cache entry) are those who
may read every one of them: the intersection of their audiences, where ``public`` is everyone's. Readers form one
set any member of which suffices, so the intersection is conservative: two sources for different groups leave no
reader but an admin.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PUBLIC = "public"
AUDIENCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._/-]{0,127}$")  # slack:C0123ABCD, github:owner/name


def audience_names(names: Iterable[str]) -> list[str]:
    """``names`` checked (letters, digits and ``:._/-``, up to 128), sorted, without repeats; raises ``ValueError``
    naming a bad one."""
    checked = set()
    for name in names:
        if not AUDIENCE_NAME.match(name):
            raise ValueError(f"audience {name!r}: letters, digits, ':', '.', '_', '/' or '-' (up to 128)")
        checked.add(name)
    return sorted(checked)


@dataclass(frozen=True)
class Viewer:
    """Whom something is shown to. ``admin``: every audience, and what no audience may read (legacy chunks, answers
    whose sources no one audience may read all of)."""

    audiences: frozenset[str] = frozenset({PUBLIC})
    admin: bool = False

    @classmethod
    def of(cls, audiences: Iterable[str] = (), *, admin: bool = False) -> Viewer:
        return cls(audiences=frozenset({PUBLIC, *audiences}), admin=admin)

    @property
    def search_filter(self) -> list[str] | None:
        """What a vector store query admits: chunks naming any of these audiences (``None``: no filter)."""
        return None if self.admin else sorted(self.audiences)

    def may_read(self, readers: Sequence[str] | None) -> bool:
        """Whether this viewer may read something whose readers are ``readers`` (``None``: unlabelled, admins only)."""
        if self.admin:
            return True
        return readers is not None and bool(self.audiences.intersection(readers))

    @property
    def is_public(self) -> bool:
        """Sees only what everyone may see."""
        return not self.admin and self.audiences == {PUBLIC}


PUBLIC_VIEWER = Viewer.of()
ADMIN = Viewer(audiences=frozenset({PUBLIC}), admin=True)


def readers_of(audience_sets: Iterable[Sequence[str] | None]) -> list[str]:
    """Who may read what was derived from things with these audiences: the intersection, ``public`` being
    everyone's (``[public]`` when all are public or there are none). An unlabelled one (``None``) leaves no reader."""
    readers: set[str] | None = None  # None: everyone so far
    for audiences in audience_sets:
        if audiences is None:
            return []
        if PUBLIC in audiences:
            continue
        readers = set(audiences) if readers is None else readers & set(audiences)
    return [PUBLIC] if readers is None else sorted(readers)


def withheld(audiences: Sequence[str] | None, patterns: Sequence[str]) -> bool:
    """Whether text read by ``audiences`` is kept from a third-party model by ``patterns``
    (``ASKFLOW_WITHHELD_AUDIENCES``, fnmatch; unlabelled text, ``None``, is while any pattern is set): the rule the
    reranker (``Retriever``) and the context model (``ingest.contextual``) both apply."""
    if not patterns:
        return False
    return audiences is None or any(fnmatch.fnmatchcase(audience, pattern)
                                    for audience in audiences for pattern in patterns)
