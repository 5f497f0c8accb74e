"""Comparing questions for the verified-answer cache, precision first.

Two questions are "the same" when their normalised text is equal, or when their embeddings are very close *and*
nothing marks them as different: a negation on one side only ("enable" vs "disable", "with" vs "without"), other
version numbers, or other identifiers (operator, option, setting or function names). Sentence embeddings place
such pairs next to each other, which is how semantic caches serve wrong answers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# words that turn a question into its opposite; each pair's sides are compared as one feature
_OPPOSITES = [
    ("enable", "disable"), ("enabled", "disabled"), ("on", "off"), ("start", "stop"), ("add", "remove"),
    ("install", "uninstall"), ("include", "exclude"), ("allow", "deny"), ("allow", "block"), ("show", "hide"),
    ("increase", "decrease"), ("before", "after"), ("with", "without"), ("min", "max"), ("minimum", "maximum"),
    ("upgrade", "downgrade"), ("pause", "unpause"), ("lock", "unlock"), ("success", "failure"),
    ("succeed", "fail"), ("first", "last"), ("import", "export"), ("push", "pull"), ("upstream", "downstream"),
    ("encrypt", "decrypt"), ("mask", "unmask"), ("sync", "async"), ("true", "false"),
]
_NEGATIONS = {"not", "no", "never", "without", "cannot", "can't", "don't", "doesn't", "isn't", "won't", "shouldn't",
              "didn't", "aren't", "wasn't", "nor", "none"}
_VERSION = re.compile(r"\b\d+(?:\.\d+)+\b|\bv\d+\b|\b\d+(?:\.x)\b")
# identifiers: snake_case, CamelCase, dotted.names, --options, ALL_CAPS settings, `code`
_IDENTIFIER = re.compile(
    r"`([^`]{2,60})`|(--?[A-Za-z][\w-]+)|\b([A-Za-z]+_[\w]+)\b|\b([A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+)\b"
    r"|\b([a-z_]\w*(?:\.[a-z_]\w*)+)\b")


def normalise(question: str) -> str:
    """Case, width, spacing and punctuation folded; what is left is what was asked."""
    text = unicodedata.normalize("NFKC", question).casefold()
    text = re.sub(r"[^\w\s.+-]", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # dots, except inside version numbers
    return " ".join(text.split())


def question_key(question: str) -> str:
    return hashlib.sha256(normalise(question).encode("utf-8")).hexdigest()[:32]


def _words(question: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", unicodedata.normalize("NFKC", question).casefold())


def _polarity(words: list[str]) -> tuple[bool, frozenset[str]]:
    present = set(words)
    negated = bool(_NEGATIONS & present) or any(w.endswith("n't") for w in words)
    sides = frozenset(f"{a}|{b}:{'a' if a in present else 'b'}" for a, b in _OPPOSITES
                      if (a in present) != (b in present))
    return negated, sides


def _other_side(side: str) -> str:
    pair, which = side.rsplit(":", 1)
    return f"{pair}:{'b' if which == 'a' else 'a'}"


def _identifiers(question: str) -> set[str]:
    found = set()
    for match in _IDENTIFIER.finditer(question):
        token = next(group for group in match.groups() if group)
        found.add(token.strip("`").casefold())
    return found


def core(question: str) -> str:
    """What a question asks, without its details: the subject line of a question written as a subject and a
    body (a forum post, an email), else the whole of it. A body's "it doesn't work" is a symptom, not a
    negation of what is asked."""
    lines = [line.strip() for line in question.strip().splitlines() if line.strip()]
    return lines[0] if len(lines) > 1 and len(lines[0]) <= 200 else question


def difference(asked: str, earlier: str) -> str | None:
    """Why ``asked`` may be another question than ``earlier`` although their embeddings are close, or ``None``:
    negations and opposite words are compared between the two questions' cores, versions and names against the
    whole earlier question."""
    asked_words, earlier_words = _words(core(asked)), _words(core(earlier))
    asked_negated, asked_sides = _polarity(asked_words)
    earlier_negated, earlier_sides = _polarity(earlier_words)
    if asked_negated != earlier_negated:
        return "negation on one side only"
    if asked_sides & {_other_side(side) for side in earlier_sides}:
        return "opposite words"
    asked_versions, earlier_versions = set(_VERSION.findall(asked)), set(_VERSION.findall(earlier))
    if asked_versions and asked_versions != earlier_versions:
        return "other version"
    asked_names = _identifiers(asked)
    if asked_names - _identifiers(earlier):
        return "other names"
    return None
