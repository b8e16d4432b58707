"""Job retention (service/retention.py): finished jobs older than an age leave the queue with their events
and the request uploads only they named; queued and running jobs, outputs/, runs/ and the library stay.
The store parts run against SQLite and PostgreSQL (`queue_url`, tests/pg.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs import open_store
from lorastudio.service.retention import parse_duration, purge_jobs, start_retention
from lorastudio.service.unsaved import REQUEST_UPLOADS, hold_request_uploads, kept_uploads_list, unsaved_root
from lorastudio.service.uploads import save_upload, upload_path, uploads_dir

DAY = 86400.0


@pytest.fixture
def stores(queue_url, workspace):
    """Each call opens another connection to the same queue, as another process would."""
    opened = []

    def make():
        store = open_store(queue_url, workspace)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def backdate(queue_url: str, job_ids, days: float) -> None:
    """Make jobs look finished `days` earlier than they did (the database clock cannot be moved)."""
    rows = [(days * DAY, job_id) for job_id in job_ids]
    if queue_url.startswith("sqlite"):
        with closing(sqlite3.connect(queue_url[len("sqlite:///") :])) as db, db:
            db.executemany("UPDATE jobs SET finished_at = finished_at - ? WHERE id = ?", rows)
    else:
        import psycopg

        with psycopg.connect(queue_url, autocommit=True) as conn:
            for seconds, job_id in rows:
                conn.execute("UPDATE jobs SET finished_at = finished_at - %s WHERE id = %s", (seconds, job_id))


def finished(store, state: str, events: int = 0, payload: dict | None = None):
    """A job that ran (with `events` progress events) and ended in `state`."""
    job = store.enqueue("sleep", payload or {}, priority=100, max_attempts=1)  # claimed before the queued ones
    claimed = store.claim("w")
    assert claimed.id == job.id
    for step in range(events):
        store.progress(job.id, claimed.attempt, step / max(events, 1), {"step": step, "pad": "x" * 200})
    if state == "interrupted":
        assert store.release(job.id, claimed.attempt)
    else:
        assert store.finish(job.id, claimed.attempt, state, result={}, error=None if state == "succeeded" else state)
    return store.get(job.id)


def test_purge_by_age_and_state_leaves_queued_running_and_recent_jobs(stores, queue_url):
    store = stores()
    old = {state: finished(store, state, events=3) for state in ("succeeded", "failed", "cancelled", "interrupted")}
    recent = finished(store, "failed", events=2)
    running = store.enqueue("sleep")
    claimed = store.claim("w")
    assert claimed.id == running.id
    store.progress(running.id, claimed.attempt, 0.5, {"step": 1})
    queued = store.enqueue("sleep")
    backdate(queue_url, [job.id for job in old.values()], days=40)
    events_of = {job.id: len(store.events(job.id)) for job in [*old.values(), recent]}
    assert all(n >= 5 for n in events_of.values())  # queued, started, progress..., finished

    with pytest.raises(LorastudioError, match="a running job is never purged"):
        store.purge_finished(30 * DAY, ["failed", "running"])
    with pytest.raises(LorastudioError, match="a queued job is never purged"):
        store.purge_finished(0, ["queued"])

    preview = store.purge_finished(30 * DAY, dry_run=True)
    assert sorted(preview.job_ids) == sorted(job.id for job in old.values())
    assert preview.events == sum(events_of[job.id] for job in old.values())
    assert len(store.list_jobs(limit=100)) == 7 and all(store.events(job.id) for job in old.values())

    only_failed = store.purge_finished(30 * DAY, ["failed"])
    assert only_failed.job_ids == [old["failed"].id] and only_failed.by_state == {"failed": 1}
    assert only_failed.events == events_of[old["failed"].id] and store.events(old["failed"].id) == []

    rest = store.purge_finished(30 * DAY, batch=2)  # two jobs a transaction
    assert rest.by_state == {"succeeded": 1, "cancelled": 1, "interrupted": 1}
    assert rest.events == sum(events_of[old[s].id] for s in ("succeeded", "cancelled", "interrupted"))
    assert all(store.events(job.id) == [] for job in old.values())
    left = {job.id: job.state for job in store.list_jobs(limit=100)}
    assert left == {recent.id: "failed", running.id: "running", queued.id: "queued"}
    assert len(store.events(recent.id)) == events_of[recent.id] and store.events(running.id)
    assert store.purge_finished(30 * DAY).jobs == 0  # idempotent
    # the running job still records progress, the queued one still runs
    assert store.progress(running.id, claimed.attempt, 0.9, {"step": 2}) is False
    assert store.claim("w").id == queued.id


def test_two_processes_purging_at_once_delete_each_job_once(stores, queue_url):
    store = stores()
    jobs = [finished(store, "succeeded", events=2) for _ in range(12)]
    backdate(queue_url, [job.id for job in jobs], days=40)
    results, errors = [], []

    def purge(other):
        try:
            results.append(other.purge_finished(30 * DAY, batch=3))
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=purge, args=(stores(),)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(i for r in results for i in r.job_ids) == sorted(job.id for job in jobs)
    assert sum(r.events for r in results) == 5 * len(jobs)  # each: queued, started, 2 progress, succeeded
    assert store.list_jobs() == []


def test_purge_frees_the_request_uploads_of_purged_failed_jobs_and_nothing_else(stores, queue_url, workspace):
    store = stores()

    def upload() -> str:
        return save_upload(workspace, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, ".png")

    failed = finished(store, "failed")  # kept (save_images true): its uploads stay while it is on record
    cancelled = finished(store, "cancelled")
    unsaved = finished(store, "failed", payload={"keep": False})  # not kept: a folder in cache/unsaved
    done = finished(store, "succeeded")  # its images in outputs/, its recipes name their copies
    young = finished(store, "failed")
    held = {job.id: [upload(), upload()] for job in (failed, cancelled, unsaved, young)}
    for job in (failed, cancelled, unsaved, young):
        hold_request_uploads(workspace, store.get(job.id), held[job.id])
    (unsaved_root(workspace) / unsaved.id / "00000-1.png").write_bytes(b"picture")
    (workspace.outputs / done.id).mkdir(parents=True)
    (workspace.outputs / done.id / "00000-7.png").write_bytes(b"kept")
    (workspace.outputs / done.id / "00000-7.yaml").write_text("recipe", encoding="utf-8")
    (workspace.runs / "mira" / "checkpoints").mkdir(parents=True)
    backdate(queue_url, [failed.id, cancelled.id, unsaved.id, done.id], days=40)

    def everything() -> list[str]:
        return sorted(p.relative_to(workspace.root).as_posix() for p in workspace.root.rglob("*") if p.is_file())

    before = everything()
    preview = purge_jobs(workspace, store, 30 * DAY, dry_run=True)
    assert everything() == before and len(store.list_jobs()) == 5
    assert (preview.jobs, preview.dry_run) == (4, True)
    gone = [upload_path(workspace, name) for job in (failed, cancelled, unsaved) for name in held[job.id]]
    expected = {p.relative_to(workspace.root).as_posix() for p in gone} | {
        kept_uploads_list(workspace, failed.id).relative_to(workspace.root).as_posix(),
        kept_uploads_list(workspace, cancelled.id).relative_to(workspace.root).as_posix(),
        f"cache/unsaved/{unsaved.id}/00000-1.png",
        f"cache/unsaved/{unsaved.id}/{REQUEST_UPLOADS}",
    }
    assert set(preview.files) == expected and preview.bytes_freed >= 6 * 108

    report = purge_jobs(workspace, store, 30 * DAY)
    assert sorted(report.files) == sorted(preview.files) and report.by_state == {"failed": 2, "cancelled": 1, "succeeded": 1}
    assert not any(path.exists() for path in gone) and not (unsaved_root(workspace) / unsaved.id).exists()
    assert sorted(p.name for p in uploads_dir(workspace).iterdir()) == sorted(held[young.id])
    assert kept_uploads_list(workspace, young.id).is_file()  # still on record: a retry can use them
    assert set(before) - set(everything()) == expected  # nothing else went: outputs/, runs/ stay
    assert (workspace.outputs / done.id / "00000-7.yaml").is_file() and (workspace.runs / "mira").is_dir()
    assert [job.id for job in store.list_jobs()] == [young.id]


def test_durations_and_the_automatic_setting(workspace, monkeypatch):
    assert [parse_duration(t) for t in ("30d", "12h", "90m", "45s", "2w", "1.5d")] == [
        30 * DAY, 12 * 3600, 90 * 60, 45, 14 * DAY, 1.5 * DAY
    ]
    for bad in ("30", "d", "-1d", "3x", ""):
        with pytest.raises(LorastudioError, match="not a duration; give a number and a unit"):
            parse_duration(bad)
    monkeypatch.setenv("LORASTUDIO_KEEP_JOBS_DAYS", "0")
    assert start_retention(workspace, lambda: open_store(None, workspace), None) is None  # off: nothing runs
    monkeypatch.setenv("LORASTUDIO_KEEP_JOBS_DAYS", "a month")
    with pytest.raises(LorastudioError, match="LORASTUDIO_KEEP_JOBS_DAYS='a month': not a number of days"):
        start_retention(workspace, lambda: open_store(None, workspace), None)


def test_a_server_with_keep_jobs_days_purges_at_start(workspace, monkeypatch):
    from lorastudio.service.studio import Studio, StudioSettings

    monkeypatch.delenv("LORASTUDIO_QUEUE_URL", raising=False)
    monkeypatch.setenv("LORASTUDIO_KEEP_JOBS_DAYS", "30")
    assert StudioSettings().keep_jobs_days == 30  # the environment sets it for serve and worker alike
    url = f"sqlite:///{workspace.db_path}"
    with open_store(url, workspace) as store:
        old, young = finished(store, "failed", events=2), finished(store, "succeeded")
        upload = save_upload(workspace, b"\x89PNG\r\n\x1a\n", ".png")
        hold_request_uploads(workspace, old, [upload])
    backdate(url, [old.id], days=31)
    studio = Studio(workspace, StudioSettings(keep_jobs_days=30, preload=False))
    try:
        studio.start()
        deadline = time.monotonic() + 20
        while studio.retention.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert studio.retention.last is not None and studio.retention.last.jobs == 1
        assert [job.id for job in studio.list_jobs()] == [young.id]
        assert not (uploads_dir(workspace) / upload).exists()
    finally:
        studio.close()
    assert not studio.retention._thread.is_alive()


def test_a_worker_with_keep_jobs_days_purges_at_start(cli, workspace, monkeypatch):
    from lorastudio.service.jobs.worker import Worker

    url = f"sqlite:///{workspace.db_path}"
    with open_store(url, workspace) as store:
        old, young = finished(store, "cancelled"), finished(store, "cancelled")
    backdate(url, [old.id], days=8)
    seen = []

    def run_until_purged(self, *args, **kwargs):  # the worker's loop, until its retention ran once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen:
            if [job.id for job in self.store.list_jobs()] == [young.id]:
                seen.append(True)
            time.sleep(0.02)
        return 0

    monkeypatch.setattr(Worker, "run", run_until_purged)
    ran = cli("worker", "--keep-jobs-days", "7", "--kinds", "sleep")
    assert ran.exit_code == 0, ran.output
    assert seen == [True]


def test_jobs_purge_cli_json_dry_run_state_and_vacuum(cli, workspace):
    url = f"sqlite:///{workspace.db_path}"
    with open_store(url, workspace) as store:
        chatty = [finished(store, "succeeded", events=400) for _ in range(3)]  # a busy server: step events
        failed = finished(store, "failed")
        upload = save_upload(workspace, b"\x89PNG\r\n\x1a\n", ".png")
        hold_request_uploads(workspace, failed, [upload])
        young = finished(store, "succeeded")
    backdate(url, [job.id for job in [*chatty, failed]], days=40)

    dry = cli("jobs", "purge", "--older-than", "30d", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    preview = json.loads(dry.output)
    assert (preview["jobs"], preview["dry_run"], preview["events"]) == (4, True, 3 * 403 + 3)
    assert preview["by_state"] == {"succeeded": 3, "failed": 1}
    assert preview["files"] == [f"cache/uploads/{upload}", f"cache/request-uploads/{failed.id}.json"]
    assert upload_path(workspace, upload).is_file()

    refused = cli("jobs", "purge", "--older-than", "30d", "--state", "running")
    assert refused.exit_code == 2 and "a running job is never purged" in refused.output
    assert "--older-than '30': not a duration" in cli("jobs", "purge", "--older-than", "30").output

    only_failed = json.loads(cli("jobs", "purge", "--older-than", "30d", "--state", "failed", "--json").output)
    assert only_failed["by_state"] == {"failed": 1} and only_failed["files"] == preview["files"]
    assert not (uploads_dir(workspace) / upload).exists()

    text = cli("jobs", "purge", "--older-than", "720h", "--vacuum")
    assert text.exit_code == 0, text.output
    assert "purged 3 job(s) (succeeded 3) and 1209 event(s) finished more than 720h ago" in text.output
    assert "compacted the queue file: " in text.output
    with open_store(url, workspace) as store:
        assert [job.id for job in store.list_jobs()] == [young.id]
    report = json.loads(cli("jobs", "purge", "--older-than", "0s", "--state", "cancelled", "--vacuum", "--json").output)
    assert report["jobs"] == 0 and report["vacuum"]["bytes_after"] <= report["vacuum"]["bytes_before"]


def test_vacuum_gives_a_large_purges_space_back(workspace):
    url = f"sqlite:///{workspace.db_path}"
    with open_store(url, workspace) as store:
        jobs = [finished(store, "succeeded", events=500) for _ in range(4)]
        backdate(url, [job.id for job in jobs], days=40)
        report = purge_jobs(workspace, store, 30 * DAY, vacuum=True)
    assert report.jobs == 4 and report.vacuum["bytes_after"] < report.vacuum["bytes_before"] / 2
    assert workspace.db_path.stat().st_size == report.vacuum["bytes_after"]


@pytest.mark.postgres
def test_vacuum_is_left_to_autovacuum_on_postgresql(pg_server, workspace):
    url = pg_server.create_database()
    with open_store(url, workspace) as store:
        job = finished(store, "failed")
        backdate(url, [job.id], days=40)
        report = purge_jobs(workspace, store, 30 * DAY, vacuum=True)
    assert report.jobs == 1 and report.vacuum == {"note": "left to PostgreSQL's autovacuum"}


# --- what stays usable once a job record is gone -----------------------------------------------------

TINY = {"model": "tiny-sd15", "steps": 2, "width": 64, "height": 64}


@pytest.mark.usefixtures("one_torch_thread")
def test_an_output_whose_job_was_purged_stays_in_the_library_api_and_web_ui(client, studio):
    from lorastudio.service.library import Library
    from lorastudio.ui.context import UiContext
    from lorastudio.ui.tabs.jobs import _artifacts, _rows

    ws = studio.workspace
    job_id = client.post("/api/v1/jobs/generate", json={**TINY, "prompt": "red", "seed": 5}).json()["id"]
    assert studio.wait_job(job_id, timeout=120).state == "succeeded"
    folder = ws.outputs / job_id
    files = sorted(p.name for p in folder.iterdir())
    png = next(name for name in files if name.endswith(".png"))

    report = purge_jobs(ws, studio.store, 0)
    assert report.jobs == 1 and report.events >= 3
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert job_id not in {job["id"] for job in client.get("/api/v1/jobs").json()["jobs"]}
    assert sorted(p.name for p in folder.iterdir()) == files  # the images and recipes stay
    assert f"{job_id}/{png}" in {row["id"] for row in client.get("/api/v1/outputs").json()["outputs"]}
    assert client.get(f"/api/v1/outputs/{job_id}/{png}").content == (folder / png).read_bytes()
    info = client.get(f"/api/v1/outputs/{job_id}/{png}/info").json()
    assert info["parameters"]["Seed"] == "5" and info["recipe"]["image"]["seed"] == 5
    assert any(row["path"].endswith(f"{job_id}/{png}") for row in Library(ws).outputs(100))
    ctx = UiContext.create(studio, "en")
    assert all(row[0] != job_id for row in _rows(ctx)) and _artifacts(ctx, job_id) == []  # the Jobs tab


@pytest.mark.slow  # one tiny training run, cancelled at its first checkpoint, resumed (~15 s)
@pytest.mark.usefixtures("one_torch_thread")
def test_a_run_resumes_by_name_after_its_training_job_was_purged(client, studio, cli, tmp_path):
    from PIL import Image

    import lorastudio.service.training as training
    from lorastudio.service.datasets import import_dataset

    ws = studio.workspace
    source = tmp_path / "source"
    source.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (200 + i * 10, 20, 20)).save(source / f"{i}.png")
        (source / f"{i}.txt").write_text("zq, red picture", encoding="utf-8")
    import_dataset(ws, "reds", [source])
    body = {
        "model": "tiny-sd15", "trigger": "zq", "data": {"dir": "reds"}, "seed": 1, "scoring": {"enabled": False},
        "train": {"steps": 4, "batch_size": 2, "learning_rate": 1e-3, "resolution": 64, "save_every_steps": 2},
        "output": {"name": "kept-run"},
    }  # fmt: skip
    real = training.run_training

    def cancelled_at_the_first_checkpoint(*args, callback, **kwargs):
        def on_event(event):
            if event.get("event") == "checkpoint":  # the user stops the run once it saved step 2
                for job in studio.list_jobs(state="running"):
                    studio.cancel_job(job.id)
            callback(event)

        return real(*args, callback=on_event, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "run_training", cancelled_at_the_first_checkpoint)
        job = client.post("/api/v1/jobs/train", json=body).json()
        ended = studio.wait_job(job["id"], timeout=300)
    assert ended.state == "cancelled", ended.error
    run_dir = ws.runs / job["payload"]["run"]
    assert (run_dir / "checkpoints" / "step-2").is_dir() and not (ws.loras / "kept-run.safetensors").exists()

    assert purge_jobs(ws, studio.store, 0).by_state == {"cancelled": 1}
    assert client.get(f"/api/v1/jobs/{job['id']}").status_code == 404
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "step-2").is_dir()
    resumed = cli("train", "--resume", run_dir.name, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["step"] == 4 and "resumed from step-2" in resumed.stderr
    assert (ws.loras / "kept-run.safetensors").is_file()
