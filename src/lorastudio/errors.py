"""One error type for everything a user can fix.

Every front (CLI, API, UI) prints `str(error)` as a single line and exits non-zero /
answers 4xx, so messages must name the thing and the fix in one sentence.

An error a web user meets often also carries a stable `key` and its `params` (keyword-only):
the web UI words it by `err.<key>` in the page's language (`ui/i18n_errors.py`), and a failed
job keeps both beside its message (`service.jobs.store.error_result`). `str(error)` stays the
English line the CLI and the REST API print. An error re-raised with more words (`ControlNet unit 0: …`,
a 422 naming the request field) keeps the key and params of the one it wraps: `InvalidRequest.wrap`.
"""

from __future__ import annotations

from typing import Any

_PLAIN = (str, int, float, bool, type(None))


class LorastudioError(Exception):
    """Bad input or state the user can fix; the message is one line that says how.

    `key` (e.g. "model_not_found") and `params` (JSON values: anything else is kept as its text)
    let a front word the same error in another language; without a key it is worded by its message.
    """

    def __init__(self, *args: object, key: str | None = None, params: dict[str, Any] | None = None) -> None:
        super().__init__(*args)
        self.key = key
        self.params = {
            name: value if isinstance(value, _PLAIN) else str(value) for name, value in (params or {}).items()
        }

    @classmethod
    def wrap(cls, message: str, cause: BaseException) -> LorastudioError:
        """`cls(message)` keeping the key and params of `cause` (the error it re-raises in other words;
        a `RequestImageError` carries them too), so the web UI still words it in the page's language."""
        return cls(message, key=getattr(cause, "key", None), params=getattr(cause, "params", None))


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
