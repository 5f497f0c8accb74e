"""Domain exceptions. Entry points map them to HTTP status codes; nothing else does."""


class AskflowError(Exception):
    """Base of every error askflow raises on purpose."""


class InvalidInput(AskflowError):
    """The caller sent something we will not accept (maps to 400)."""


class TooLarge(InvalidInput):
    """The caller sent more than we read (maps to 413)."""


class TooSlow(InvalidInput):
    """The caller sent its body too slowly (maps to 408)."""


class NotFound(AskflowError):
    """The thing asked for does not exist (maps to 404)."""


class Forbidden(AskflowError):
    """The caller may not do this to that resource (maps to 403)."""


class Conflict(AskflowError):
    """The request is valid but the resource is not in a state that allows it (maps to 409)."""


class LeaseHeld(AskflowError):
    """Another worker is answering this request now: try again later (the message goes back to the queue)."""


class Duplicate(AskflowError):
    """Something with this id exists already (a retried delivery)."""


class ModelUnavailable(AskflowError):
    """The LLM or embeddings endpoint kept failing after every retry."""


class ConfigurationError(AskflowError):
    """Settings name something that cannot be built (unknown provider, missing URL)."""


class OverBudget(AskflowError):
    """A budget's limit is reached for this window (maps to 429, with ``Retry-After``)."""

    def __init__(self, message: str, *, limit: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s


class DirectoryUnavailable(AskflowError):
    """The group directory could not say whether someone is a group's member (an error, a time-out): a rule that
    needed the answer admits no one."""
