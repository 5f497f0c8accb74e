"""What one graded answer teaches: its vote on the documents it cited, and whether it may be served again."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from askflow.domain.model import Graded, LearnedAnswer, Request, Source
from askflow.learning.questions import question_key
from askflow.ports import VectorStore


def cited_sources(request: Request) -> list[Source]:
    """The sources the answer cites (``[n]`` in its text); none when it cites none."""
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", request.answer or "")}
    return [source for source in request.sources if source.n in numbers]


def vote(request: Request, graded: Graded) -> int:
    """+1 for a verified answer (``learning.trust``: nothing else is positive evidence), -1 for a bad one (rated
    down by its asker, or graded bad), 0 for one that is no evidence about its sources (private: it is never used;
    graded good but not verified)."""
    if graded.grade_reason.startswith("private"):
        return 0
    if graded.verified:
        return 1
    if request.asker_rating is False or not graded.is_good:
        return -1
    return 0


def learned_answer(request: Request, graded: Graded, *, fingerprints: Mapping[str, str],
                   collection: str, embedding_model: str) -> LearnedAnswer:
    """The record a grading run keeps of ``request``, under the question it is stored as (a follow-up's stand-alone
    rewording). It is served again only when verified (``learning.trust``) and, unless a reviewer's word stands
    for it, only while every source it cites is current: a source gone since the answer was written leaves nothing
    to check the answer against."""
    team = request.team_answer is not None  # a person's answer rests on no source: nothing voids it
    cited_now = [] if team else [s for s in cited_sources(request) if s.doc_id in fingerprints]
    cited = {s.doc_id: fingerprints[s.doc_id] for s in cited_now}
    ballot = vote(request, graded)
    reviewed = graded.verified and (team or (graded.verified_by or "").startswith("reviewer"))
    verified = graded.verified and (reviewed or (bool(cited) and len(cited) == len(
        {s.doc_id for s in cited_sources(request)})))
    asked = request.stored_question
    return LearnedAnswer(
        request_id=request.request_id, collection=request.collection or collection,
        embedding_model=request.embedding_model or embedding_model, vote=ballot, cited=cited,
        question=asked, question_key=question_key(asked), verified=verified, verified_by=graded.verified_by,
        answer=request.served_answer if verified else None,
        sources=[] if team else list(request.sources) if verified else cited_now,  # served again whole, or cited
        graded_at=graded.graded_at,
        readers=request.team_readers if team else request.readers,  # a person's answer: its place's (or internal)
    )


def still_valid(answers: Sequence[LearnedAnswer], store: VectorStore) -> list[LearnedAnswer]:
    """Those of ``answers`` whose cited documents are all stored with the fingerprints they had when graded (one
    indexed lookup for all of them)."""
    if not answers:
        return []
    current = store.fingerprints(sorted({doc_id for answer in answers for doc_id in answer.cited}))
    return [answer for answer in answers
            if all(current.get(doc_id) == sha for doc_id, sha in answer.cited.items())]
