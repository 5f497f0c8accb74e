"""Answers without a model: whole sentences quoted from the sources that match the question, with citations. The
answer's ``mode`` ("extractive") says so, and every front end shows it.

Only sources that share a word with the question are listed (a search always returns something; what matches
nothing is noise to a reader). A follow-up is answered from what it adds: the words of the earlier questions
count for less, and a sentence the previous answer already quoted is not quoted again. Quotes are whole
sentences, their hard line breaks joined, reStructuredText roles reduced to their text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from askflow.domain.model import Source

NOTHING_FOUND = "Nothing in the indexed sources matches this question."
QUOTED_SOURCES = 3
QUOTE_CHARS = 450  # about three sentences; one longer sentence is cut at a word, with an ellipsis

_STOPWORDS = frozenset(
    "the and for are but not you your with this that from have has had was were will would can could should "
    "what when where which who why how does did doing done use using used into onto about there their them they "
    "then than its it's also just like want need get got set any all some one two way make made i'm i've "
    "airflow please thanks thank hello help question questions".split())
_ROLE = re.compile(r":[\w:.-]+:`(?:[^`<]*<)?~?([^`>]+)>?`")  # :class:`~a.b.C` -> a.b.C, :doc:`Text <x>` -> Text
_LITERAL = re.compile(r"``([^`]+)``")  # reStructuredText's inline literal: Markdown's code span
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])")


def terms(text: str) -> set[str]:
    """Content words, lowercased, a plural's "s" dropped: what decides whether a passage matches."""
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", text.lower())
    return {w[:-1] if w.endswith("s") and len(w) > 4 else w for w in words if w not in _STOPWORDS}


def extractive_answer(question: str, sources: Sequence[Source],
                      history: Sequence[tuple[str, str]] = ()) -> tuple[str, list[Source]]:
    """The answer text and the sources it lists (renumbered from 1), best first."""
    asked = terms(question)
    earlier = set().union(*(terms(q) for q, _ in history)) if history else set()
    added = asked - earlier or asked  # what the follow-up adds; all of it when it adds nothing new
    topic = asked | earlier  # what the conversation is about: "how do I stop that?" after "catchup keeps running"
    quoted_before = {_plain(s) for _, answer in history for s in _sentences(answer)}
    matching = [s for s in sources if topic & terms(f"{s.title} {s.section} {s.excerpt}")]
    kept = [source.model_copy(update={"n": n}) for n, source in enumerate(matching, start=1)]
    quotes = _quotes(kept, added, topic, quoted_before)
    if not quotes and quoted_before:  # all it matches was quoted before: quote again what matches what it adds
        quotes = _quotes(kept, added, added, set())
    if not quotes:
        return NOTHING_FOUND, []
    return "\n\n".join(quotes), kept


def _quotes(sources: Sequence[Source], added: set[str], topic: set[str], quoted_before: set[str]) -> list[str]:
    quotes = []
    for source in sources:
        if len(quotes) == QUOTED_SOURCES:
            break
        passage = _best_passage(source.excerpt, added, topic, quoted_before)
        if passage:
            quotes.append(f"> {passage} [{source.n}]")
    return quotes


def _best_passage(excerpt: str, added: set[str], topic: set[str], quoted_before: set[str]) -> str:
    """The sentences of ``excerpt`` that match the question best (what it adds counts double), in their own
    order, whole, at most about ``QUOTE_CHARS`` long; empty when none shares a word with the conversation or all
    were quoted before."""
    sentences = [s for s in _sentences(excerpt) if _plain(s) not in quoted_before]
    scored = []
    for index, sentence in enumerate(sentences):
        words = terms(sentence)
        score = 2 * len(added & words) + len(topic & words)
        if score:
            scored.append((score, index))
    if not scored:
        return ""
    chosen: list[int] = []
    length = 0
    for _, index in sorted(scored, key=lambda item: (-item[0], item[1])):
        if chosen and length + len(sentences[index]) > QUOTE_CHARS:
            continue
        chosen.append(index)
        length += len(sentences[index]) + 1
        if length >= QUOTE_CHARS:
            break
    passage = " ".join(sentences[index] for index in sorted(chosen))
    if len(passage) > QUOTE_CHARS + 150:  # one very long sentence
        passage = passage[: QUOTE_CHARS].rsplit(" ", 1)[0] + " …"
    return passage


def _sentences(text: str) -> list[str]:
    """Sentences of prose, with code blocks, directive lines and headings' underlines left out and hard line
    breaks joined."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text or ""):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines or lines[0].startswith(("    ", "\t", "```", ">>>", "$ ", "..")) or _is_rule(lines[-1]):
            continue
        paragraphs.append(_LITERAL.sub(r"`\1`", _ROLE.sub(r"\1", " ".join(line.strip() for line in lines))))
    sentences = [s.strip() for paragraph in paragraphs for s in _SENTENCE.split(paragraph) if len(s.strip()) > 20]
    if sentences and sentences[0][0].islower():  # a chunk that begins mid-sentence: not a sentence to quote
        sentences = sentences[1:]
    return sentences


def _is_rule(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 3 and len(set(stripped)) == 1 and stripped[0] in "=-~^*#+"


def _plain(sentence: str) -> str:
    return " ".join(re.sub(r"\[\d+\]|^>\s*", "", sentence).split()).lower()
