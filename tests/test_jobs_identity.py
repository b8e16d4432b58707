"""Workers that share an id never take each other's jobs; a dead one's jobs come back at its restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lorastudio.service.jobs import open_store
from lorastudio.service.jobs.identity import WorkerLock, base_worker_id, owner_is_dead, unique_worker_id
from lorastudio.service.jobs.worker import Worker, worker_locks_dir

pytestmark = pytest.mark.slow  # worker processes killed and restarted (~13 s)

LONG_LEASE_S = 60.0  # longer than every test here: whatever comes back, comes back by proof, not by expiry


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_each_worker_process_stores_its_own_id_under_the_given_one(tmp_path):
    first, second = unique_worker_id("box:cuda:0"), unique_worker_id("box:cuda:0")
    assert first != second
    assert base_worker_id(first) == base_worker_id(second) == "box:cuda:0"
    assert f"#{os.getpid()}-" in first
    assert base_worker_id("legacy-id") == "legacy-id"


def test_a_held_lock_is_alive_a_released_one_is_unknown_an_orphaned_one_is_dead(tmp_path):
    lock = WorkerLock(tmp_path, "box:cpu#1-aa")
    lock.acquire()
    assert lock.path.is_file() and "/" not in lock.path.name
    assert not owner_is_dead(tmp_path, "box:cpu#1-aa")  # held (even by this very process)
    lock.release()
    assert not lock.path.exists()
    assert not owner_is_dead(tmp_path, "box:cpu#1-aa")  # no file: cannot prove anything
    # a lock file nobody holds: what a SIGKILLed worker leaves
    lock.path.write_text("pid 1\n")
    assert owner_is_dead(tmp_path, "box:cpu#1-aa")
    assert not lock.path.exists()  # proved dead once
    long_id = unique_worker_id("x" * 300)
    long_lock = WorkerLock(tmp_path, long_id)
    long_lock.acquire()  # a file name stays under the 255-byte limit
    assert not owner_is_dead(tmp_path, long_id)
    long_lock.release()


def test_a_second_worker_with_the_same_id_leaves_the_first_ones_job_alone(queue_url, workspace):  # noqa: F811
    with open_store(queue_url, workspace, lease_s=LONG_LEASE_S) as store:
        job = store.enqueue("sleep", {"seconds": 1.0, "steps": 10, "mark": True})
        first = Worker(store, workspace, worker_id="box:cpu")
        thread = threading.Thread(target=first.run, kwargs={"max_jobs": 1}, daemon=True)
        thread.start()
        wait_for(lambda: store.get(job.id).progress > 0, what="the first worker to run the job")
        with open_store(queue_url, workspace, lease_s=LONG_LEASE_S) as other_store:
            second = Worker(other_store, workspace, worker_id="box:cpu")
            assert second.worker_id != first.worker_id
            assert second.run(stop_when_idle=True) == 0
            assert second.recover_dead_incarnations() == []
        thread.join(timeout=10)
        done = store.get(job.id)
        assert (done.state, done.attempt, done.result["worker"]) == ("succeeded", 1, first.worker_id)
        assert [e.type for e in store.events(job.id)].count("started") == 1
        assert [p.name for p in (workspace.outputs / job.id).iterdir()] == ["attempt-1.txt"]


def test_a_restarted_worker_requeues_what_its_dead_earlier_run_left(queue_url, workspace):  # noqa: F811
    with open_store(queue_url, workspace, lease_s=LONG_LEASE_S) as store:
        dead_job = store.enqueue("sleep")
        other_job = store.enqueue("sleep")
        dead_id = "box:cpu#999999-dead"
        store.claim(dead_id)
        store.claim("elsewhere:cpu#1-live")  # another base id: never ours to recover
        worker_locks_dir(workspace).mkdir(parents=True, exist_ok=True)
        (worker_locks_dir(workspace) / "box%3Acpu%23999999-dead.lock").write_text("pid 999999\n")
        restarted = Worker(store, workspace, worker_id="box:cpu")
        recovered = restarted.recover_dead_incarnations()
        assert [(j.id, j.state) for j in recovered] == [(dead_job.id, "queued")]
        assert "died" in recovered[0].error
        assert store.get(other_job.id).state == "running"


# --- real worker processes ----------------------------------------------------------------


def start_worker(queue: str, worker_id: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from lorastudio.cli import main; main()", "worker"]
    cmd += ["--queue", queue, "--id", worker_id, "--lease-seconds", str(LONG_LEASE_S)]
    out = open(log, "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))


def live_locks(workspace) -> list[Path]:
    folder = worker_locks_dir(workspace)
    return sorted(folder.glob("*.lock")) if folder.is_dir() else []


def pid_of(stored_id: str) -> int:
    return int(stored_id.rpartition("#")[2].split("-")[0])


def test_two_worker_processes_with_one_id_run_every_job_once_and_a_killed_ones_job_returns(
    queue_url,  # noqa: F811
    workspace,
    tmp_path,
):
    store = open_store(queue_url, workspace, lease_s=LONG_LEASE_S)
    procs = [start_worker(queue_url, "box:cpu", tmp_path / f"w{i}.log") for i in range(2)]
    try:
        wait_for(lambda: len(live_locks(workspace)) == 2, what="both workers to start")
        jobs = [store.enqueue("sleep", {"seconds": 0.2, "steps": 2, "mark": True}) for _ in range(20)]
        for job in jobs:
            store.wait_until(job.id, timeout=60)
        finished = [store.get(job.id) for job in jobs]
        assert {(j.state, j.attempt) for j in finished} == {("succeeded", 1)}
        for job in jobs:
            assert [p.name for p in (workspace.outputs / job.id).iterdir()] == ["attempt-1.txt"]
            assert [e.type for e in store.events(job.id)].count("started") == 1
        assert {base_worker_id(j.result["worker"]) for j in finished} == {"box:cpu"}

        # SIGKILL the worker running a long job: its lease outlives the test, only its restart can free it
        long = store.enqueue("sleep", {"seconds": 2.0, "steps": 20, "mark": True})
        owner = wait_for(lambda: (j := store.get(long.id)).progress > 0 and j.worker, what="the long job to run")
        victim = next(p for p in procs if p.pid == pid_of(owner))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        time.sleep(0.5)
        assert (store.get(long.id).state, store.get(long.id).attempt) == ("running", 1)  # the sibling left it
        procs.append(start_worker(queue_url, "box:cpu", tmp_path / "restarted.log"))
        done = store.wait_until(long.id, timeout=30)
        assert (done.state, done.attempt) == ("succeeded", 2)
        requeued = [e for e in store.events(long.id) if e.type == "requeued"]
        assert len(requeued) == 1 and "died" in requeued[0].data["reason"]
        assert sorted(p.name for p in (workspace.outputs / long.id).iterdir()) == ["attempt-1.txt", "attempt-2.txt"]
    except BaseException:
        for log in sorted(tmp_path.glob("*.log")):
            print(log.name, log.read_text())
        raise
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        store.close()
    assert all(proc.returncode in (0, -signal.SIGKILL) for proc in procs)


def test_two_studios_on_one_workspace_run_each_of_20_jobs_once(workspace):
    from lorastudio.service.studio import Studio, StudioSettings

    settings = StudioSettings(queue_url=f"sqlite:///{workspace.db_path}", lease_s=LONG_LEASE_S)
    with Studio(workspace, settings) as one, Studio(workspace, StudioSettings(**vars(settings))) as two:
        one.start()
        two.start()
        wait_for(lambda: len(live_locks(workspace)) == 2, what="both studio workers to start")
        w1, w2 = one.worker_thread.worker, two.worker_thread.worker
        assert w1.base_id == w2.base_id and w1.worker_id != w2.worker_id
        jobs = [one.store.enqueue("sleep", {"seconds": 0.1, "steps": 2, "mark": True}) for _ in range(20)]
        finished = [one.store.wait_until(job.id, timeout=60) for job in jobs]
    assert {(j.state, j.attempt) for j in finished} == {("succeeded", 1)}
    for job in jobs:
        assert [p.name for p in (workspace.outputs / job.id).iterdir()] == ["attempt-1.txt"]
    assert live_locks(workspace) == []  # a clean stop leaves no lock file behind


def test_two_servers_on_one_workspace_never_run_a_job_twice(workspace):
    from test_api_serve import Server

    first = Server(workspace).start()
    second = None
    try:
        with open_store(None, workspace) as store:
            long = store.enqueue("sleep", {"seconds": 2.0, "steps": 20, "mark": True})
            wait_for(lambda: store.get(long.id).progress > 0, what="the first server to run the long job")
            second = Server(workspace).start()  # its start-up used to requeue the first one's job
            short = [store.enqueue("sleep", {"seconds": 0.1, "steps": 2, "mark": True}) for _ in range(20)]
            finished = [store.wait_until(job.id, timeout=60) for job in [long, *short]]
            assert {(j.state, j.attempt) for j in finished} == {("succeeded", 1)}
            for job in finished:
                assert [p.name for p in (workspace.outputs / job.id).iterdir()] == ["attempt-1.txt"]
                assert [e.type for e in store.events(job.id)].count("started") == 1
                assert "requeued" not in [e.type for e in store.events(job.id)]
    finally:
        for server in (first, second):
            if server is not None:
                server.stop()
    logs = "".join(p.read_text() for p in workspace.root.glob("serve-*.log"))
    assert "lease lost" not in logs
