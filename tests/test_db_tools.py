"""`lorastudio db check|backup|restore`, and a damaged studio.db at start: one clear line, nothing lost."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.service.jobs import open_store

PAGE = 4096


def fill_queue(workspace, jobs: int = 200) -> list[str]:
    with open_store(None, workspace) as store:
        return [store.enqueue("sleep", {"seconds": i, "note": "x" * 200}).id for i in range(jobs)]


def job_ids(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM jobs")}
    finally:
        conn.close()


def scribble(path, offset: int, size: int = 2 * PAGE) -> None:
    """Garbage over part of the file, as a bad disk or a stray write would leave it."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))


def test_a_healthy_queue_checks_ok(workspace, cli):
    fill_queue(workspace, 3)
    result = cli("db", "check")
    assert result.exit_code == 0 and result.stdout.startswith("ok: ") and "studio.db" in result.stdout


def test_a_workspace_the_cli_used_first_starts_a_server(workspace, cli):
    """`models list` / `generate` create studio.db with the library tables only: not damage."""
    from lorastudio.service.library import Library
    from lorastudio.service.studio import Studio

    Library(workspace).models()
    assert cli("db", "check").exit_code == 0
    studio = Studio(workspace)
    try:
        assert studio.submit("sleep", {"seconds": 0}).id
    finally:
        studio.close()


def test_a_database_of_another_program_is_refused(workspace, cli):
    conn = sqlite3.connect(workspace.db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    checked = cli("db", "check")
    assert checked.exit_code == 1 and "no jobs table" in checked.stdout


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_queue_is_reported_and_refused_at_start_with_one_line(workspace, cli, where):
    from lorastudio.service.studio import Studio

    fill_queue(workspace)
    scribble(workspace.db_path, 0 if where == "header" else 3 * PAGE)
    checked = cli("db", "check", "--json")
    assert checked.exit_code == 1
    assert '"ok": false' in checked.stdout
    plain = cli("db", "check")
    assert plain.exit_code == 1 and plain.stdout.startswith("not ok: ") and "db restore BACKUP" in plain.output
    with pytest.raises(LorastudioError) as error:
        Studio(workspace)
    message = str(error.value)
    assert "studio.db is damaged" in message and "lorastudio db restore BACKUP" in message
    assert "\n" not in message
    if where == "header":  # any verb that opens the queue: one line, exit 2, no traceback
        listed = cli("jobs", "list")
        assert listed.exit_code == 2 and "Traceback" not in listed.output
        assert "damaged" in listed.output and "lorastudio db restore" in listed.output


def test_backup_is_consistent_while_a_store_writes_and_restore_brings_it_back(workspace, cli, tmp_path):
    ids = fill_queue(workspace, 20)
    with open_store(None, workspace) as live:  # a server still running: WAL not checkpointed
        live.enqueue("sleep")
        made = cli("db", "backup", str(tmp_path / "copy.db"))
        assert made.exit_code == 0, made.output
    backup = tmp_path / "copy.db"
    assert made.stdout.strip() == str(backup)
    assert set(ids) < job_ids(backup) and len(job_ids(backup)) == 21
    assert sqlite3.connect(backup).execute("PRAGMA quick_check").fetchone()[0] == "ok"

    scribble(workspace.db_path, 0)
    damaged = workspace.db_path.read_bytes()
    restored = cli("db", "restore", str(backup))
    assert restored.exit_code == 0, restored.output
    kept = sorted(workspace.root.glob("studio.db.bak-*"))
    assert [p.name for p in kept] == [kept[0].name] and kept[0].read_bytes() == damaged
    assert str(kept[0]) in restored.stdout
    assert len(job_ids(workspace.db_path)) == 21
    assert cli("db", "check").exit_code == 0
    with open_store(None, workspace) as store:  # and the queue works again
        assert store.get(ids[0]).state == "queued"


def test_default_backup_goes_into_the_workspace(workspace, cli):
    fill_queue(workspace, 2)
    made = cli("db", "backup")
    assert made.exit_code == 0, made.output
    path = made.stdout.strip()
    assert path.startswith(str(workspace.root / "backups" / "studio-")) and len(job_ids(path)) == 2
    as_json = cli("db", "backup", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["backup"].endswith(".db")
    restored = cli("db", "restore", path, "--json")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["database"] == str(workspace.db_path)


def test_restore_refuses_a_damaged_backup_and_changes_nothing(workspace, cli, tmp_path):
    fill_queue(workspace, 5)
    before = workspace.db_path.read_bytes()
    bad = tmp_path / "bad.db"
    bad.write_bytes(os.urandom(8 * PAGE))
    refused = cli("db", "restore", str(bad))
    assert refused.exit_code == 2 and "the backup is damaged" in refused.output
    assert workspace.db_path.read_bytes() == before
    assert list(workspace.root.glob("studio.db.bak-*")) == []
    missing = cli("db", "restore", str(tmp_path / "nope.db"))
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_restore_refuses_while_a_worker_of_the_workspace_runs(workspace, cli, tmp_path):
    from lorastudio.service.jobs.identity import WorkerLock
    from lorastudio.service.jobs.worker import worker_locks_dir

    fill_queue(workspace, 2)
    assert cli("db", "backup", str(tmp_path / "copy.db")).exit_code == 0
    lock = WorkerLock(worker_locks_dir(workspace), "box:cpu#1-aa")
    lock.acquire()
    try:
        refused = cli("db", "restore", str(tmp_path / "copy.db"))
        assert refused.exit_code == 2 and "stop them first" in refused.output
    finally:
        lock.release()
    assert cli("db", "restore", str(tmp_path / "copy.db")).exit_code == 0


def test_backup_refuses_a_damaged_database(workspace, cli, tmp_path):
    fill_queue(workspace)
    scribble(workspace.db_path, 0)
    refused = cli("db", "backup", str(tmp_path / "copy.db"))
    assert refused.exit_code == 2 and "damaged" in refused.output
    assert not (tmp_path / "copy.db").exists()


def test_postgres_queues_get_pg_dump_advice_without_the_password(workspace, cli):
    url = "postgresql://ann:s3cret@db.example:5432/studio"
    for verb in (["backup"], ["restore", "x.dump"]):
        result = cli("db", *verb, "--queue", url)
        assert result.exit_code == 2
        assert "pg_dump" in result.output and "pg_restore" in result.output
        assert "s3cret" not in result.output


def test_serve_and_worker_on_a_damaged_queue_exit_with_one_line(workspace, cli):
    fill_queue(workspace, 20)
    scribble(workspace.db_path, 3 * PAGE)
    for verb in (["serve", "--no-preload", "--port", "1"], ["worker"]):
        result = cli(*verb)
        assert result.exit_code == 2, (verb, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "is damaged" in lines[0] and "lorastudio db restore" in lines[0]


@pytest.mark.postgres
def test_check_reaches_a_postgres_queue_and_names_an_unreachable_one(workspace, cli, pg_server):  # noqa: F811
    url = pg_server.create_database()
    fill = open_store(url, workspace)
    fill.enqueue("sleep")
    fill.close()
    ok = cli("db", "check", "--queue", url)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: postgresql://")
    down = cli("db", "check", "--queue", "postgresql://ann:s3cret@127.0.0.1:1/nope")
    assert down.exit_code == 1 and down.stdout.startswith("not ok: postgresql://ann@127.0.0.1:1/nope: ")
    assert "s3cret" not in down.output
