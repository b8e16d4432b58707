"""The worker: handlers, progress, cancel, graceful stop, lost leases, and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorastudio.service.jobs import open_store, register_handler
from lorastudio.service.jobs.identity import base_worker_id
from lorastudio.service.jobs.worker import Worker


@pytest.fixture
def store(queue_url, workspace):  # noqa: F811
    with open_store(queue_url, workspace, lease_s=1.0) as s:
        yield s


def start_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_runs_a_job_with_progress_and_artifacts(store, workspace):
    job = store.enqueue("sleep", {"seconds": 0.2, "steps": 4, "mark": True})
    worker = Worker(store, workspace, worker_id="w1")
    assert worker.run(stop_when_idle=True) == 1
    done = store.get(job.id)
    assert (done.state, done.attempt, done.progress) == ("succeeded", 1, 1.0)
    assert done.result == {"slept": 0.2, "steps": 4, "attempt": 1, "worker": worker.worker_id}
    assert base_worker_id(worker.worker_id) == "w1" and worker.worker_id != "w1"
    progress = [e.data for e in store.events(job.id) if e.type == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4] and progress[-1]["total"] == 4
    assert (workspace.outputs / job.id / "attempt-1.txt").read_text().strip() == worker.worker_id


def test_handler_error_fails_the_job_with_its_traceback(store, workspace):
    job = store.enqueue("sleep", {"seconds": 0, "steps": 1, "fail": "out of VRAM"})
    Worker(store, workspace).run(stop_when_idle=True)
    failed = store.get(job.id)
    assert (failed.state, failed.error) == ("failed", "RuntimeError: out of VRAM")
    tb = [e for e in store.events(job.id) if e.type == "traceback"]
    assert tb and "out of VRAM" in tb[0].data["text"]


def test_a_refused_input_fails_the_job_with_its_own_line_only(store, workspace):
    """The UI and API show `job.error`: a LorastudioError is the user's fix, not a class name."""
    from lorastudio.errors import LorastudioError

    def refuse(ctx):
        raise LorastudioError("inkwash.safetensors: made for SD 1.x; pick an SD 1.x model.")

    register_handler("test-refused", refuse)
    job = store.enqueue("test-refused")
    Worker(store, workspace, kinds=["test-refused"]).run(stop_when_idle=True)
    assert store.get(job.id).error == "inkwash.safetensors: made for SD 1.x; pick an SD 1.x model."


def test_bad_handler_results_and_unknown_kinds_fail_clearly(store, workspace):
    register_handler("test-not-a-dict", lambda ctx: ["a list"])
    register_handler("test-unserialisable", lambda ctx: {"x": object()})
    wrong = store.enqueue("test-not-a-dict")
    opaque = store.enqueue("test-unserialisable")
    unknown = store.enqueue("test-nobody-handles-this")
    kinds = ["test-not-a-dict", "test-unserialisable", "test-nobody-handles-this"]
    Worker(store, workspace, kinds=kinds).run(stop_when_idle=True)
    assert "expected a dict" in store.get(wrong.id).error
    assert "not JSON-serialisable" in store.get(opaque.id).error
    assert "no handler registered" in store.get(unknown.id).error
    assert {store.get(j.id).state for j in (wrong, opaque, unknown)} == {"failed"}


def test_cancel_reaches_a_running_handler_at_its_next_step(store, workspace):
    job = store.enqueue("sleep", {"seconds": 20, "steps": 200})
    worker = Worker(store, workspace, worker_id="w1")
    thread = start_in_thread(worker)
    wait_for(lambda: store.get(job.id).progress > 0, what="job to start")
    asked = time.monotonic()
    store.cancel(job.id)
    done = store.wait_until(job.id, timeout=5)
    assert done.state == "cancelled" and time.monotonic() - asked < 2
    assert done.progress < 0.5
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_stopping_worker_hands_its_job_back_and_the_next_run_resumes(store, workspace):
    job = store.enqueue("sleep", {"seconds": 20, "steps": 200})
    first = Worker(store, workspace, worker_id="w1")
    thread = start_in_thread(first)
    wait_for(lambda: store.get(job.id).progress > 0, what="job to start")
    first.stop()
    thread.join(timeout=5)
    requeued = store.get(job.id)
    assert (requeued.state, requeued.attempt, requeued.worker) == ("queued", 1, None)
    # picked up again as attempt 2, which knows it resumed (shortened so the test stays fast)
    second = Worker(store, workspace, worker_id="w2")
    claimed = store.claim("w2")
    claimed.payload.update(seconds=0, steps=1)
    assert second.run_job(claimed) == "succeeded"
    logs = [e.data["line"] for e in store.events(job.id) if e.type == "log"]
    assert logs == ["resumed: attempt 2"]


@pytest.mark.slow
def test_heartbeats_keep_a_job_longer_than_its_lease(queue_url, workspace):  # noqa: F811
    with open_store(queue_url, workspace, lease_s=0.3) as store, open_store(queue_url, workspace) as reaper:
        job = store.enqueue("sleep", {"seconds": 1.0, "steps": 5})
        worker = Worker(store, workspace, worker_id="w1")
        thread = start_in_thread(worker)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # a busy neighbour reaping all the time
            assert reaper.reap() == []
            time.sleep(0.05)
        done = store.wait_until(job.id, timeout=5)
        worker.stop()
        thread.join(timeout=5)
    assert (done.state, done.attempt) == ("succeeded", 1)


def test_a_worker_that_lost_its_job_drops_the_result(store, queue_url, workspace):  # noqa: F811
    thief = open_store(queue_url, workspace)

    def stolen(ctx):
        thief.recover(ctx.worker_id)  # as if this worker had been frozen past its lease
        thief.claim("thief")
        ctx.progress(0.5)
        return {"written": True}

    register_handler("test-stolen", stolen)
    job = store.enqueue("test-stolen")
    worker = Worker(store, workspace, worker_id="victim", kinds=["test-stolen"])
    assert worker.run_job(store.claim(worker.worker_id)) is None
    now = store.get(job.id)
    assert (now.state, now.worker, now.attempt, now.result) == ("running", "thief", 2, None)
    thief.close()


def test_worker_remembers_loaded_models_and_prefers_their_jobs(store, workspace):
    store.enqueue("sleep", {"seconds": 0, "steps": 0}, affinity="sd15")
    worker = Worker(store, workspace, worker_id="w1")
    worker.run(max_jobs=1)
    assert worker.loaded == {"sd15"}
    other = store.enqueue("sleep", {"seconds": 0, "steps": 0}, affinity="sdxl")
    same = store.enqueue("sleep", {"seconds": 0, "steps": 0}, affinity="sd15")
    worker.run(max_jobs=1)
    assert store.get(same.id).state == "succeeded" and store.get(other.id).state == "queued"


def test_jobs_cli_submit_list_show_cancel(workspace, monkeypatch):
    from lorastudio.cli import _register, app

    monkeypatch.delenv("LORASTUDIO_QUEUE_URL", raising=False)
    _register()
    runner = CliRunner()
    submitted = runner.invoke(
        app, ["jobs", "submit", "sleep", "--payload", '{"seconds": 1}', "--user", "ann", "--json"]
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.stdout)["id"]
    listed = json.loads(runner.invoke(app, ["jobs", "list", "--json", "--state", "queued"]).stdout)
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    cancelled = runner.invoke(app, ["jobs", "cancel", job_id])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    shown = json.loads(runner.invoke(app, ["jobs", "show", job_id, "--json"]).stdout)
    assert shown["job"]["state"] == "cancelled" and shown["job"]["user"] == "ann"
    assert [e["type"] for e in shown["events"]] == ["queued", "cancelled"]
    bad = runner.invoke(app, ["jobs", "submit", "sleep", "--payload", "{nope"])
    assert bad.exit_code == 2 and "not valid JSON" in bad.output


# --- real worker processes ----------------------------------------------------------------


def start_worker_process(queue: str, worker_id: str, logs: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from lorastudio.cli import main; main()", "worker"]
    cmd += ["--queue", queue, "--id", worker_id, "--lease-seconds", "1"]
    log = open(logs / f"{worker_id}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))


@pytest.mark.slow
def test_killed_worker_job_finishes_on_the_other_worker_exactly_once(queue_url, workspace, tmp_path):  # noqa: F811
    store = open_store(queue_url, workspace, lease_s=1.0)
    long = store.enqueue("sleep", {"seconds": 1.5, "steps": 15, "mark": True}, priority=10)
    short = [store.enqueue("sleep", {"seconds": 0.1, "steps": 2, "mark": True}) for _ in range(6)]
    every = [long, *short]
    a = start_worker_process(queue_url, "A", tmp_path)
    b = None
    try:
        wait_for(
            lambda: base_worker_id((j := store.get(long.id)).worker or "") == "A" and j.progress >= 0.1,
            timeout=20,
            what="A to run the job",
        )
        b = start_worker_process(queue_url, "B", tmp_path)
        a.send_signal(signal.SIGKILL)
        assert a.wait(timeout=5) == -signal.SIGKILL
        for job in every:
            store.wait_until(job.id, timeout=30)
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=10) == 0
    except BaseException:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
        print((tmp_path / "A.log").read_text(), (tmp_path / "B.log").read_text() if b else "")
        raise
    finished = [store.get(j.id) for j in every]
    assert {j.state for j in finished} == {"succeeded"}
    resumed = store.get(long.id)
    assert (resumed.attempt, base_worker_id(resumed.result["worker"])) == (2, "B")
    assert sorted(p.name for p in (workspace.outputs / long.id).iterdir()) == [
        "attempt-1.txt",
        "attempt-2.txt",
    ]
    assert base_worker_id((workspace.outputs / long.id / "attempt-1.txt").read_text().strip()) == "A"
    for job in every:
        types = [e.type for e in store.events(job.id)]
        assert types.count("succeeded") == 1, (job.id, types)
    assert [e.type for e in store.events(long.id)].count("started") == 2
    assert "requeued" in [e.type for e in store.events(long.id)]
    store.close()


def test_worker_compile_gives_its_jobs_a_compiling_model_cache(workspace, monkeypatch):
    """`lorastudio worker --compile`: the jobs' shared model cache compiles what it loads, as `serve --compile`."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from lorastudio.cli import _register, app
    from lorastudio.service.job_steps import model_cache_of
    from lorastudio.service.jobs.worker import Worker

    seen = {}

    def run_once(self) -> int:  # what a job of this worker gets as its model cache
        seen["cache"] = model_cache_of(SimpleNamespace(cache=self.cache, workspace=workspace))
        return 0

    monkeypatch.setattr(Worker, "run", run_once)
    monkeypatch.setattr("signal.signal", lambda *args: None)  # keep pytest's own handlers
    monkeypatch.setenv("LORASTUDIO_HOME", str(workspace.root))
    _register()
    done = CliRunner().invoke(app, ["worker", "--compile"])
    assert done.exit_code == 0, done.output
    assert seen["cache"].compile_backend == "inductor" and seen["cache"].names.strict
    done = CliRunner().invoke(app, ["worker"])
    assert done.exit_code == 0 and seen["cache"].compile_backend is None  # uncompiled without --compile


def test_a_keyed_error_keeps_its_key_and_params_beside_the_english_line(store, workspace):
    """Both stores keep a failed job's error key in its result (no new column): a page words it later."""
    from lorastudio.service.names import find_dataset

    register_handler("test-keyed", lambda ctx: find_dataset(ctx.workspace, "no-such-set"))
    job = store.enqueue("test-keyed")
    Worker(store, workspace, kinds=["test-keyed"]).run(stop_when_idle=True)
    failed = store.get(job.id)
    assert failed.state == "failed" and failed.error.startswith("data set 'no-such-set' not found in datasets/")
    assert (failed.error_key, failed.error_params["name"]) == ("dataset_not_found", "no-such-set")
    finish = [e for e in store.events(job.id) if e.type == "failed"]
    assert finish and finish[0].data["error"] == failed.error and finish[0].data["result"]["error_key"] == failed.error_key
