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


#: a sentence's end: its stop, then the citations written after it ("... it. [2]"), then a space or a line break
_SENTENCE_END = re.compile(r"(?<=[.!?])((?:\s*\[\d+\])*)\s+(?!\s|\[)")
_FENCED_CODE = re.compile(r"```.*?```", re.DOTALL)


def grounded(text: str, sources: Sequence[Source], *, mode: str = "llm") -> bool:
    """Whether every statement of ``text`` cites a source it was given: every sentence of a model's answer (a code
    block, a heading or a list's lead-in ending in ``:`` is no statement), every quote of an extractive one. An answer
    with no valid citation at all (a small model's, say) is never grounded."""
    given = {source.n for source in sources}
    if not given:
        return False
    units = _quoted_units(text) if mode == "extractive" else _sentences(text)
    cited_any = False
    for unit in units:
        numbers = {int(n) for n in _CITATION.findall(unit)}
        if not numbers or not numbers <= given:
            return False
        cited_any = True
    return cited_any


def _quoted_units(text: str) -> list[str]:
    return [paragraph for paragraph in re.split(r"\n\s*\n", text) if paragraph.strip()]


def _sentences(text: str) -> list[str]:
    """The statements of a Markdown answer: its prose cut into sentences (a sentence's citations stay with it)."""
    prose = _FENCED_CODE.sub("\n\n", text)
    units = []
    for paragraph in re.split(r"\n\s*\n", prose):
        for line in paragraph.splitlines():
            line = line.strip().lstrip(">").strip()
            if not line or line.startswith("#") or (line.endswith(":") and not _CITATION.search(line)):
                continue
            line = re.sub(r"^([-*+]|\d+[.)])\s+", "", line)
            pieces = _SENTENCE_END.sub(lambda m: f"{m.group(1)}\x00", line).split("\x00")
            units += [piece for piece in pieces if re.search(r"[A-Za-z0-9]", piece)]
    return units
