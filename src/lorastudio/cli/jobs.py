"""`lorastudio jobs ...` (inspect, cancel and purge queued work) and `lorastudio worker` (run it)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from lorastudio.cli import app
from lorastudio.cli.common import print_json, workspace
from lorastudio.errors import LorastudioError

jobs_app = typer.Typer(
    help="List, inspect, submit, cancel and purge jobs in the queue.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")

QUEUE_HELP = (
    "Queue URL (sqlite:///studio.db or postgresql://...); default $LORASTUDIO_QUEUE_URL or the workspace db."
)
KEEP_JOBS_HELP = (
    "Purge finished jobs (with their events and the request uploads only they named) this many days after "
    "they finished: at start, then hourly; 0 keeps every job (default; env LORASTUDIO_KEEP_JOBS_DAYS). "
    "Outputs, training runs and the library stay."
)


def _store(queue: str | None):
    from lorastudio.service.jobs import open_store

    return open_store(queue, workspace())


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@jobs_app.command("list")
def list_jobs(
    state: str = typer.Option(
        None, "--state", help="Only jobs in this state (queued, running, succeeded, ...)."
    ),
    user: str = typer.Option(None, "--user", help="Only this user's jobs."),
    limit: int = typer.Option(50, "--limit", help="At most this many, newest first."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Jobs, newest first."""
    with _store(queue) as store:
        jobs = store.list_jobs(state=state, user=user, limit=limit)
    if as_json:
        print_json({"jobs": [j.to_dict() for j in jobs]})
        return
    if not jobs:
        typer.echo("no jobs")
        return
    typer.echo(f"{'id':36}  {'kind':10} {'state':11} {'progress':>8}  {'user':12} {'try':>3}  created")
    for j in jobs:
        typer.echo(
            f"{j.id:36}  {j.kind:10} {j.state:11} {j.progress:8.0%}  {j.user or '-':12} {j.attempt:>3}  {_when(j.created_at)}"
        )


@jobs_app.command("show")
def show_job(
    job_id: str = typer.Argument(..., help="The job id (from `lorastudio jobs list`)."),
    after: int = typer.Option(0, "--after", help="Only events after this sequence number."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """One job with its events."""
    with _store(queue) as store:
        job = store.get(job_id)
        events = store.events(job_id, after_seq=after)
    if as_json:
        print_json({"job": job.to_dict(), "events": [e.to_dict() for e in events]})
        return
    for key, value in job.to_dict().items():
        if key.endswith("_at") or key == "lease_until":
            value = _when(value)
        elif isinstance(value, dict):
            value = json.dumps(value, ensure_ascii=False)
        typer.echo(f"{key:17} {value}")
    typer.echo("events:")
    for e in events:
        typer.echo(f"  {e.seq:>4} {_when(e.ts)} {e.type:16} {json.dumps(e.data, ensure_ascii=False)}")


@jobs_app.command("cancel")
def cancel_job(
    job_id: str = typer.Argument(..., help="The job id."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Cancel a queued job now, or ask a running one to stop at its next step."""
    with _store(queue) as store:
        job = store.cancel(job_id)
    if as_json:
        print_json(job.to_dict())
    elif job.state == "cancelled":
        typer.echo(f"{job.id}: cancelled")
    elif job.cancel_requested:
        typer.echo(f"{job.id}: cancel requested; the worker stops it at its next step")
    else:
        typer.echo(f"{job.id}: already {job.state}; nothing to cancel")


@jobs_app.command("submit")
def submit_job(
    kind: str = typer.Argument(..., help="Job kind: generate, grid, train, caption, import or sleep."),
    overrides: list[str] = typer.Argument(
        None, help="key=value settings of the kind's config, over --config and --payload (e.g. steps=20)."
    ),
    config: Path = typer.Option(None, "--config", "-c", help="YAML or TOML file with the kind's config."),
    payload: str = typer.Option(
        None,
        "--payload",
        help='Job payload as JSON: {"config": {...}} plus the kind\'s extras (a grid\'s "grid"); '
        "a payload without config is the config itself.",
    ),
    priority: int = typer.Option(0, "--priority", help="Higher runs first."),
    user: str = typer.Option("", "--user", help="Who asked (for fair sharing and the per-user limit)."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Queue a job: its config is checked as the API checks it (unknown keys get "did you mean")."""
    from lorastudio.service.job_kinds import submit_job as submit_typed
    from lorastudio.service.job_kinds import typed_job
    from lorastudio.service.studio import Studio, StudioSettings

    cfg, extras = typed_job(kind, file=config, overrides=overrides or [], payload=_payload_object(payload))
    with Studio(workspace(), StudioSettings(queue_url=queue)) as studio:
        job = submit_typed(studio, kind, cfg, extras, user=user, priority=priority)
    if as_json:
        print_json(job.to_dict())
    else:
        typer.echo(job.id)


@jobs_app.command("purge")
def purge_jobs(
    older_than: str = typer.Option(
        ..., "--older-than", help="Only jobs that finished longer ago than this: 30d, 12h, 90m, 45s or 2w."
    ),
    state: str = typer.Option(
        None,
        "--state",
        help="Comma-separated finished states to purge (succeeded,failed,cancelled,interrupted; default all). "
        "Queued and running jobs are never purged.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would go; change nothing."),
    vacuum: bool = typer.Option(
        False,
        "--vacuum",
        help="Then compact a SQLite queue file (VACUUM: locks it while it runs, needs its size in free disk); "
        "PostgreSQL leaves this to autovacuum.",
    ),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Delete finished jobs, their events and the request uploads only they named; outputs, runs and the
    library stay."""
    from lorastudio.service.retention import parse_duration, parse_states
    from lorastudio.service.retention import purge_jobs as purge

    age, states = parse_duration(older_than), parse_states(state)
    ws = workspace()
    with _store(queue) as store:
        report = purge(ws, store, age, states, dry_run=dry_run, vacuum=vacuum and not dry_run)
    if as_json:
        print_json(report.to_dict())
        return
    would = "would purge" if dry_run else "purged"
    counts = ", ".join(f"{name} {n}" for name, n in sorted(report.by_state.items()))
    typer.echo(
        f"{would} {report.jobs} job(s){f' ({counts})' if counts else ''} and {report.events} event(s) "
        f"finished more than {older_than} ago"
    )
    if report.files:
        freed = "would free" if dry_run else "freed"
        typer.echo(f"{freed} {len(report.files)} file(s), {_size(report.bytes_freed)}:")
        for path in report.files:
            typer.echo(f"  {path}")
    if report.swept:
        typer.echo(f"swept {len(report.swept)} orphaned unsaved folder(s) of jobs no longer in the queue")
    if report.vacuum and "note" in report.vacuum:
        typer.echo(f"--vacuum: {report.vacuum['note']}")
    elif report.vacuum:
        before, after = report.vacuum["bytes_before"], report.vacuum["bytes_after"]
        typer.echo(f"compacted the queue file: {_size(before)} -> {_size(after)}")
    if dry_run:
        typer.echo("nothing changed (--dry-run)")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _payload_object(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LorastudioError(
            f"--payload: not valid JSON ({exc.msg}); pass e.g. '{{\"config\": {{\"steps\": 20}}}}'."
        ) from None
    if not isinstance(data, dict):
        raise LorastudioError("--payload: must be a JSON object, e.g. '{\"config\": {\"steps\": 20}}'.")
    return data


@app.command("worker")
def worker(
    device: str = typer.Option(None, "--device", help="Device for this worker's jobs, e.g. cuda:0."),
    queue: str = typer.Option(None, "--queue", help=QUEUE_HELP),
    worker_id: str = typer.Option(
        None,
        "--id",
        help="Worker id; default host:device. Each process adds its pid and a random part, so two "
        "processes with one id never take each other's jobs; a restart requeues a dead one's jobs.",
    ),
    lease_seconds: float = typer.Option(
        30.0, "--lease-seconds", help="A job is requeued this long after its last heartbeat."
    ),
    kinds: str = typer.Option(
        None, "--kinds", help="Comma-separated job kinds to take; default all registered."
    ),
    imports: list[str] = typer.Option(
        [], "--import", help="Module to import first (it registers more handlers)."
    ),
    allow_hub_ids: bool = typer.Option(
        False,
        "--allow-hub-ids",
        help="Let jobs name Hugging Face hub ids (only while online), as `serve --allow-hub-ids`; "
        "otherwise every name is a file in the workspace.",
    ),
    compile_models: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile each loaded model's UNet and VAE decoder, as `serve --compile` (CUDA graphs on a "
        "GPU); the first image of each size pays the compile, later launches reuse studio/cache/torch-compile.",
    ),
    keep_jobs_days: float = typer.Option(None, "--keep-jobs-days", min=0, help=KEEP_JOBS_HELP),
) -> None:
    """Run jobs from the queue until SIGTERM/Ctrl-C (a running job is handed back to the queue)."""
    from lorastudio.service.database import ensure_database_healthy
    from lorastudio.service.job_kinds import install
    from lorastudio.service.jobs import HandlerRegistry
    from lorastudio.service.jobs.worker import run_worker_process
    from lorastudio.service.names import NamePolicy

    kind_list = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    ws = workspace()
    ensure_database_healthy(queue, ws)  # one clear line, not a traceback
    ran = run_worker_process(
        queue,
        device=device,
        worker_id=worker_id,
        lease_s=lease_seconds,
        kinds=kind_list,
        imports=imports,
        workspace=ws,
        registry=install(HandlerRegistry()),
        names=NamePolicy(strict=True, allow_hub_ids=allow_hub_ids),
        compile_backend="inductor" if compile_models else None,
        keep_jobs_days=keep_jobs_days,
    )
    typer.echo(f"worker stopped after {ran} job(s)", err=True)
