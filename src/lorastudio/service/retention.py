"""Job retention: finished jobs older than an age leave the queue, with their events and the files only
they named.

`lorastudio jobs purge --older-than 30d` and the servers' `--keep-jobs-days N` (`RetentionThread`: at
start, then hourly, in `serve` and `worker` alike) call `purge_jobs`. It deletes finished jobs
(`JobStore.purge_finished`: never a queued or running one, in batches of 500 so workers write between
them, safe from several processes at once: a job is deleted once), then what only those jobs named in
the cache (`service.unsaved.drop_purged_job_files`: a failed or cancelled A1111 request's uploads, a
not-kept job's folder), then sweeps what other boxes' purges left (`sweep_unsaved`).

It never touches outputs/ (the images and recipes the library lists), runs/ (a training run resumes by
its name, `train --resume RUN`, its folder holding config and checkpoints), loras/, models/ or the
library's rows. `vacuum` compacts a SQLite queue afterwards (`VACUUM`); PostgreSQL's autovacuum
gives deleted rows' space back by itself.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs.store import FINISHED_STATES, check_purge_states
from lorastudio.service.unsaved import drop_purged_job_files, purged_job_files, sweep_unsaved

if TYPE_CHECKING:
    from lorastudio.service.jobs.store import JobStore
    from lorastudio.service.workspace import Workspace

__all__ = [
    "KEEP_JOBS_ENV",
    "RETENTION_EVERY_S",
    "PurgeReport",
    "RetentionThread",
    "keep_jobs_days_from_env",
    "parse_duration",
    "parse_states",
    "purge_jobs",
    "start_retention",
]

logger = logging.getLogger("lorastudio.retention")

KEEP_JOBS_ENV = "LORASTUDIO_KEEP_JOBS_DAYS"
RETENTION_EVERY_S = 3600.0  # a server's purge runs at its start and then hourly
DAY_S = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S, "w": 7 * DAY_S}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
AUTOVACUUM = "left to PostgreSQL's autovacuum"


def parse_duration(text: str, what: str = "--older-than") -> float:
    """Seconds of `30d`, `12h`, `90m`, `45s` or `2w`; anything else one line naming `what`."""
    match = _DURATION.fullmatch((text or "").strip().lower())
    if match is None:
        raise LorastudioError(
            f"{what} {text!r}: not a duration; give a number and a unit: 30d (days), 12h, 90m, 45s or 2w."
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_states(text: str | None, what: str = "--state") -> tuple[str, ...]:
    """`succeeded,failed` as states a purge may delete; none given: every finished state."""
    if text is None or not text.strip():
        return FINISHED_STATES
    try:
        return check_purge_states(part.strip() for part in text.split(",") if part.strip())
    except LorastudioError as exc:
        raise LorastudioError.wrap(f"{what}: {exc}", exc) from None


def keep_jobs_days_from_env() -> float:
    """`LORASTUDIO_KEEP_JOBS_DAYS`, or 0 (keep every job)."""
    value = os.environ.get(KEEP_JOBS_ENV, "").strip()
    if not value:
        return 0.0
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not days >= 0:  # also NaN
        raise LorastudioError(f"{KEEP_JOBS_ENV}={value!r}: not a number of days; set e.g. 30 (0 = keep every job).")
    return days


@dataclass
class PurgeReport:
    """What a purge deleted (a dry run: would delete)."""

    older_than_s: float
    states: list[str]
    dry_run: bool
    jobs: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    events: int = 0
    files: list[str] = field(default_factory=list)  # workspace-relative: request uploads, not-kept folders
    bytes_freed: int = 0
    swept: list[str] = field(default_factory=list)  # orphaned not-kept folders the sweep removed (job ids)
    vacuum: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def purge_jobs(
    ws: Workspace,
    store: JobStore,
    older_than_s: float,
    states: tuple[str, ...] | list[str] | None = None,
    *,
    dry_run: bool = False,
    vacuum: bool = False,
) -> PurgeReport:
    """Delete the finished jobs (in `states`, default all finished ones) older than `older_than_s`, their
    events and the cache files only they named; `dry_run` says what would go and changes nothing;
    `vacuum` then compacts a SQLite queue file (PostgreSQL: autovacuum does)."""
    if not older_than_s >= 0:
        raise LorastudioError(f"purge age {older_than_s!r}: must be 0 or more seconds, e.g. 30d.")
    wanted = check_purge_states(states)
    purged = store.purge_finished(older_than_s, wanted, dry_run=dry_run)
    report = PurgeReport(older_than_s=float(older_than_s), states=list(wanted), dry_run=dry_run)
    report.jobs, report.by_state, report.events = purged.jobs, dict(purged.by_state), purged.events
    for job_id in purged.job_ids:
        files = purged_job_files(ws, job_id)
        for path in files:
            try:
                report.bytes_freed += path.stat().st_size
            except OSError:
                continue
            report.files.append(_relative(ws, path))
        if files and not dry_run:
            drop_purged_job_files(ws, job_id)
    if dry_run:
        return report
    report.swept = sweep_unsaved(ws, store)  # what other boxes' purges (or an older version) left
    if vacuum:
        sizes = store.compact()
        report.vacuum = {"note": AUTOVACUUM} if sizes is None else {"bytes_before": sizes[0], "bytes_after": sizes[1]}
    return report


def _relative(ws: Workspace, path: Any) -> str:
    try:
        return path.relative_to(ws.root).as_posix()
    except ValueError:
        return str(path)


class RetentionThread:
    """The servers' automatic retention: `purge_jobs` of jobs finished more than `keep_s` ago, at start
    and every `every_s`, on its own store connection (a long purge never holds the server's)."""

    def __init__(
        self, ws: Workspace, open_store: Callable[[], JobStore], keep_s: float, every_s: float = RETENTION_EVERY_S
    ) -> None:
        self.workspace = ws
        self.open_store = open_store
        self.keep_s = float(keep_s)
        self.every_s = float(every_s)
        self.last: PurgeReport | None = None
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lorastudio-retention", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        store = None
        try:
            while not self._stop.is_set():
                try:
                    store = store or self.open_store()
                    self.last = purge_jobs(self.workspace, store, self.keep_s)
                    if self.last.jobs or self.last.swept:
                        logger.info(
                            "retention: purged %d finished jobs, %d events, %d files (%d bytes) older than %.1f days",
                            self.last.jobs, self.last.events, len(self.last.files), self.last.bytes_freed,
                            self.keep_s / DAY_S,
                        )  # fmt: skip
                except Exception as exc:  # a database hiccup: try again next time
                    logger.warning("retention: purge failed (%s); next try in %.0f s", exc, self.every_s)
                self.runs += 1
                self._stop.wait(self.every_s)
        finally:
            if store is not None:
                store.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def start_retention(
    ws: Workspace, open_store: Callable[[], JobStore], keep_days: float | None, every_s: float = RETENTION_EVERY_S
) -> RetentionThread | None:
    """Start automatic retention for a server (`--keep-jobs-days`; None reads `LORASTUDIO_KEEP_JOBS_DAYS`);
    None when it is off (0 days)."""
    days = keep_jobs_days_from_env() if keep_days is None else float(keep_days)
    if not days >= 0:
        raise LorastudioError(f"--keep-jobs-days {keep_days}: must be 0 (keep every job) or more days, e.g. 30.")
    if days == 0:
        return None
    thread = RetentionThread(ws, open_store, days * DAY_S, every_s)
    thread.start()
    return thread
