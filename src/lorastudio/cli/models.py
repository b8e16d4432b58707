"""`lorastudio models` verbs."""

from lorastudio.cli import app  # noqa: F401
