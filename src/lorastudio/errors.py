"""One error type for everything a user can fix.

Every front (CLI, API, UI) prints `str(error)` as a single line and exits non-zero /
answers 4xx, so messages must name the thing and the fix in one sentence.
"""


class LorastudioError(Exception):
    """Bad input or state the user can fix; the message is one line that says how."""


class InvalidRequest(LorastudioError):
    """A request field the service refuses (wrong type, out of range); the API answers 422 naming it."""


class LimitExceeded(InvalidRequest):
    """A request asks for more work than the server allows; the API answers 422 naming the limit."""


class NotFoundError(LorastudioError):
    """A named model, LoRA, data set, job or file does not exist."""


class UnsafeFileError(LorastudioError):
    """A file would need unsafe unpickling or is otherwise refused for safety."""


class NotYours(LorastudioError):
    """Another user's job: the API answers 403 (users share files, not each other's work)."""
