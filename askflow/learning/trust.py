"""What askflow trusts, decided in this one place: whether an answer is **verified**.

A verified answer is served again from the cache, listed on the homepage, written back as a source and counted as
positive evidence by the ranking; nothing else is. An answer is verified when:

- a **reviewer** approved it (a person holding an admin credential, or in the reviewers group, from the admin page
  or a Slack button): on its own, and with no citation needed (it is shown with its reviewer); or the team answered
  it (a reply in its escalation's thread that a reviewer marked as the answer: ``Request.team_answer``); or
- it is **grounded** (every statement cites a source it was given: ``citations.grounded``), a **model judge**
  graded it good (helpful, relevant, and the passages it cites say what it says) **and its asker** rated it 👍 (in
  Slack the asking user, no other clicker).

Never verified: what only a heuristic graded good (a heuristic may reject, never verify); an answer no person
confirmed, however the judge graded it; any number of ratings by people other than its asker; a follow-up with no
stand-alone rewording (its own words are not a question); an answer served from the cache (the answer it was served
from stays the one record); anything the private-data patterns or the judge find not public; an answer its asker
rated 👎 or a reviewer turned down.

An asker's 👍 on an answer nothing verified puts it in the **review queue** (at most ``review_cap`` open items per
asker), where a reviewer's approval verifies it.
"""

from __future__ import annotations

from dataclasses import dataclass

from askflow.domain.model import Grade, Request

MODEL_JUDGE = "llm"  # the grader method whose "good" is a judge's verdict


@dataclass(frozen=True)
class Trust:
    """What an answer may be used for: ``verified`` (and ``by`` whom), or why not; ``in_review``: it waits for a
    reviewer."""

    verified: bool
    reason: str
    by: str | None = None
    in_review: bool = False


def trust(request: Request, grade: Grade, *, is_good: bool, reason: str) -> Trust:
    """The trust of ``request``'s answer, given its grade and the grading verdict (``is_good``, ``reason``:
    ``graders.verdict``)."""
    if reason.startswith("private"):
        return Trust(False, reason)
    if request.cached_from is not None:
        return Trust(False, "served from the cache: the answer it was served from is the record")
    if request.follow_up and not request.standalone_question:
        return Trust(False, "a follow-up with no stand-alone rewording")
    team = request.team_answer
    if team is not None and request.escalation is not None and request.escalation.joined:
        return Trust(False, "joined an escalation: the escalated request is the team's answer's record")
    turned_down = request.approval is not None and not request.approval.approved
    if team is not None and turned_down and request.approval.at >= team.at:
        return Trust(False, f"the team's answer, turned down by reviewer {request.approval.by}")
    if team is not None:  # a person answered, and a reviewer marked it as the answer: verified by construction
        return Trust(True, f"answered by {team.by}, marked by reviewer {team.marked_by}",
                     by=f"reviewer {_shown(team.marked_by)}")
    approval = request.approval
    if approval is not None:
        if approval.approved:
            return Trust(True, f"approved by reviewer {approval.by}", by=f"reviewer {_shown(approval.by)}")
        return Trust(False, f"turned down by reviewer {approval.by}")
    asker = request.asker_rating
    if asker is False:
        return Trust(False, "rated down by its asker")
    waits = asker is True  # a person vouched for it: a reviewer decides what the machine could not
    if not request.grounded:
        return Trust(False, "not grounded: a statement cites no source it was given", in_review=waits)
    if grade.method != MODEL_JUDGE:
        return Trust(False, f"graded by the {grade.method} grader, which never verifies", in_review=waits)
    if not is_good:
        return Trust(False, f"the model judge: {reason}", in_review=waits)
    if not waits:
        return Trust(False, "graded good by the model judge; no person confirmed it")
    return Trust(True, "graded good by the model judge and rated up by its asker", by="model judge and asker")


def _shown(who: str) -> str:
    """A person as an answer shows them to anyone: never a whole e-mail address, never a Slack user id (the audit log
    keeps who it was)."""
    if who.startswith("slack:"):
        return "in Slack"
    if who.startswith("github:"):
        return "on GitHub"
    return who.partition("@")[0]
