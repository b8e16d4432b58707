"""Renamed to `lorastudio.service.job_kinds`; these names stay importable from here for api/native.py."""

from lorastudio.service.job_kinds import CaptionJobConfig, ImportJobConfig  # noqa: F401
