"""Commands: what a caller asks the service layer to do, validated at the edge (HTTP body, Slack event)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr

RESERVED_ID = re.compile(r"^__.*__$")  # Firestore's reserved document ids
ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _not_reserved(identifier: str) -> str:
    if RESERVED_ID.match(identifier):
        raise ValueError("ids of the form __...__ are reserved")
    return identifier


def _storable(text: str) -> str:
    """Text a store can hold: no NUL byte, no lone surrogate (JSON's "\ud800" decodes to one)."""
    if "\x00" in text:
        raise ValueError("contains a NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate (not a character)") from None
    return text


StorableText = Annotated[StrictStr, AfterValidator(_storable)]
#: whitespace as JSON Schema's patterns (ECMA-262's ``\s``) know it: a question of only these is blank, so the API
#: and its OpenAPI spec (``pattern: "\\S"``) agree on what is blank
WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000\ufeff"
#: an id the stores can hold: letters, digits, "_" and "-", never Firestore's reserved ``__...__``
Identifier = Annotated[StrictStr, Field(pattern=ID.pattern), AfterValidator(_not_reserved)]


def is_storable_id(value: object) -> bool:
    """Whether ``value`` is an ``Identifier`` (for ids that arrive outside a command, as in a Slack click)."""
    return isinstance(value, str) and bool(ID.match(value)) and not RESERVED_ID.match(value)


class AskQuestion(BaseModel):
    """``POST /requests`` body."""

    model_config = ConfigDict(extra="forbid")

    question: StorableText = Field(min_length=1)
    thread_id: Identifier | None = None
    fresh: StrictBool = False  # answer anew, even when a verified earlier answer matches


class RateAnswer(BaseModel):
    """``POST /requests/{id}/feedback`` body. Who rates is never the caller's to say: the server derives it (the
    asker's token, the Slack user)."""

    model_config = ConfigDict(extra="forbid")

    positive: StrictBool
    comment: StorableText | None = Field(default=None, max_length=2000)


class ReviewDecision(BaseModel):
    """``POST /admin/review/{id}`` JSON body (an admin key's): approve the answer (verified) or turn it down."""

    model_config = ConfigDict(extra="forbid")

    approved: StrictBool
