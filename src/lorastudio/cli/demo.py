"""`lorastudio demo` verbs."""

from lorastudio.cli import app  # noqa: F401
