"""Citations a reader can trust: every ``[n]`` in a model's answer names a source it was given.

A number that names no source is removed (and counted); the sources are renumbered in the order the answer first
cites them, and those it never cites follow, marked ``cited=False``, so the list the reader sees starts with what the
answer rests on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from askflow.domain.model import Source

_CITATION = re.compile(r"\[(\d+)\]")


def check_citations(text: str, sources: Sequence[Source]) -> tuple[str, list[Source], int]:
    """(the text with citations renumbered, the sources in citation order, how many citations were removed)."""
    by_number = {source.n: source for source in sources}
    cited: list[int] = []  # in the order of first citation
    removed = 0
    for match in _CITATION.finditer(text):
        number = int(match.group(1))
        if number not in by_number:
            removed += 1
        elif number not in cited:
            cited.append(number)
    order = cited + [source.n for source in sources if source.n not in cited]
    renumbered = {old: new for new, old in enumerate(order, start=1)}

    def replace(match: re.Match) -> str:
        number = int(match.group(1))
        return f"[{renumbered[number]}]" if number in renumbered else ""

    checked = re.sub(r"[ \t]+([.,;:!?])", r"\1", _CITATION.sub(replace, text))  # "text [9]." -> "text."
    return checked, [by_number[old].model_copy(update={"n": renumbered[old], "cited": old in cited})
                     for old in order], removed
