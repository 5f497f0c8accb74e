"""What travels on the event bus, typed: payloads are parsed into these once, at the edge."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class QuestionQueued(Message):
    """A stored request waits for the answer worker. ``published_at`` is the queue's, not part of the payload."""

    request_id: str = Field(min_length=1, max_length=200)
    published_at: dt.datetime | None = Field(default=None, exclude=True)


class GradingDue(Message):
    """A request's answer or ratings changed (``revision``): the evaluation loop should grade it."""

    request_id: str = Field(min_length=1, max_length=200)
    revision: str
    attempt: int = Field(default=0, ge=0)  # grading runs that tried and got no grade from the judge
