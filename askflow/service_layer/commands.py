"""Commands: what a caller asks the service layer to do, validated at the edge (HTTP body, Slack event)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr


class AskQuestion(BaseModel):
    """``POST /requests`` body."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(min_length=1)
    thread_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    fresh: StrictBool = False  # answer anew, even when a verified earlier answer matches


class RateAnswer(BaseModel):
    """``POST /requests/{id}/feedback`` body. ``rater`` identifies the person (a browser id, a Slack user id)."""

    model_config = ConfigDict(extra="forbid")

    positive: StrictBool
    comment: str | None = Field(default=None, max_length=2000)
    rater: str = Field(default="anonymous", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
