"""How sure askflow is of an answer: one confidence, from signals that exist with and without a model, and the
"not sure" verdict that hands a question to a person (``service_layer.escalation``).

The rule the calibration on the dev questions supports (``bench/confidence_calibration.py``; README, "When askflow
is not sure"): no retrieval signal told the questions whose sources held a gold page from the others with an AUC of
0.70 on the half it was not tuned on, so "not sure" fires only when no source matched the question, or when the
model's answer says its sources do not cover it. The confidence value is the top document's fused score, kept
beside the verdict: the insights count an answer below ``confidence_weak_match`` as resting on weakly matching
sources, and ``askflow eval retrieval --details`` writes it for any question set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from askflow.domain.model import Source

NO_SOURCE = "no source matched the question"
NOT_COVERED = "the model says the sources do not cover it"

_SOURCES = r"(?:the\s+(?:provided\s+|given\s+|numbered\s+)?(?:sources|documentation)(?:\s+provided|\s+given)?)"
_NEGATED = r"(?:do\s+not|don't|does\s+not|doesn't|did\s+not|didn't)"
#: what a model's answer says when its sources do not cover the question (the answering prompt asks it to say that
#: it does not know): a first-person "I do not know", or the sources named as not saying it; a "not" elsewhere in
#: an answer ("do not set catchup", "the scheduler does not run paused DAGs") says nothing of the sources
_DOES_NOT_COVER = re.compile(
    r"\bI\s+(?:do\s+not|don't|cannot|can't|could\s+not|couldn't)\s+(?:know|find|answer|tell|say)\b"
    rf"|\b{_SOURCES}\s+{_NEGATED}\s+(?:\w+\s+)?(?:contain|cover|mention|say|include|address|answer|describe|explain)"
    r"|\bnone\s+of\s+the\s+(?:provided\s+|given\s+)?sources\b"
    rf"|\bnot\s+(?:covered|mentioned|addressed|described|explained)\s+(?:in|by)\s+{_SOURCES}"
    rf"|\bno\s+(?:information|mention|details?)\s+(?:about|on|of)\b[^.]*\bin\s+{_SOURCES}",
    re.IGNORECASE)


@dataclass(frozen=True)
class Confidence:
    """``value``: the top document's fused score (0 with no source); ``not_sure``: hand the question to a person
    (``reason`` says why)."""

    value: float
    not_sure: bool
    reason: str = ""


def assess(*, top_score: float | None, sources: Sequence[Source], answer_text: str, mode: str,
           nothing_found: str) -> Confidence:
    """The confidence of an answer: ``top_score`` is the fused score of the best document (``None``: none found),
    ``sources`` what the answer was given, ``mode`` the answer's (``llm``: a model wrote it), ``nothing_found`` the
    extractive answer's text when nothing matched."""
    value = round(float(top_score or 0.0), 4)
    if not sources or answer_text.strip() == nothing_found:
        return Confidence(value, True, NO_SOURCE)
    if mode == "llm" and says_not_covered(answer_text):
        return Confidence(value, True, NOT_COVERED)
    return Confidence(value, False)


def says_not_covered(answer_text: str) -> bool:
    """Whether a model's answer says its sources do not cover the question."""
    return bool(_DOES_NOT_COVER.search(answer_text or ""))
