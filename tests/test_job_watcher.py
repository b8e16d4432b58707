"""service.job_watcher: the blocking and the asyncio waiter agree, and one event wakes every stream."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lorastudio.service.job_watcher import JobWatcher
from lorastudio.service.jobs import open_store


@pytest.fixture
def stores(workspace):
    """The API's store (the watcher's) and a worker's own connection, as in `Studio`."""
    api, worker = open_store(None, workspace), open_store(None, workspace)
    yield api, worker
    api.close()
    worker.close()


def _both_waiters(watcher: JobWatcher, job_id: str, timeout: float | None, end) -> tuple[object, object]:
    """Run a blocking and an asyncio waiter at once while `end()` ends the job; what each returned or raised."""
    outcomes: dict[str, object] = {}

    def blocking():
        try:
            outcomes["sync"] = watcher.wait(job_id, timeout)
        except TimeoutError as exc:
            outcomes["sync"] = exc

    async def waiting():
        try:
            return await watcher.wait_async(job_id, timeout)
        except TimeoutError as exc:
            return exc

    async def main():
        task = asyncio.ensure_future(waiting())
        await asyncio.sleep(0.1)
        await asyncio.to_thread(end)
        return await task

    thread = threading.Thread(target=blocking)
    thread.start()
    outcomes["async"] = asyncio.run(main())
    thread.join(10)
    return outcomes["sync"], outcomes["async"]


@pytest.mark.parametrize("outcome", ["succeeded", "cancelled", "timeout"])
def test_the_blocking_and_the_async_waiter_return_the_same_job(stores, outcome):
    api, worker = stores
    watcher = JobWatcher(api, api)
    job = api.enqueue("sleep", {"config": {"seconds": 0}})

    def end():
        if outcome == "succeeded":
            claimed = worker.claim("w1")
            worker.finish(claimed.id, claimed.attempt, result={"ok": 1})
            watcher.job_ended(job.id)  # what the in-process worker does: both wake at once
        elif outcome == "cancelled":
            worker.cancel(job.id)  # no wake-up call: the waiters notice by polling

    sync, async_ = _both_waiters(watcher, job.id, 0.8 if outcome == "timeout" else 10, end)
    if outcome == "timeout":
        assert isinstance(sync, TimeoutError) and isinstance(async_, TimeoutError)
        assert str(sync) == str(async_) == f"job {job.id}: still queued after 1s"
        return
    assert sync.state == async_.state == outcome
    assert sync.to_dict() == async_.to_dict() == api.get(job.id).to_dict()
    assert not watcher._waiters  # nothing left behind for a finished job


def test_one_event_wakes_two_streaming_subscribers(stores):
    api, worker = stores
    watcher = JobWatcher(api, api)
    job = api.enqueue("sleep", {})
    claimed = worker.claim("w1")

    async def main():
        first, second = watcher.subscribe(), watcher.subscribe()
        await asyncio.sleep(0.2)  # the listener thread is waiting on the database
        assert not first.is_set() and not second.is_set()
        await asyncio.to_thread(worker.emit, job.id, claimed.attempt, "log", {"line": "hello"})
        await asyncio.wait_for(asyncio.gather(first.wait(), second.wait()), 5)
        watcher.unsubscribe(first)
        watcher.unsubscribe(second)

    try:
        asyncio.run(main())
    finally:
        watcher.close(5)
    assert not watcher._hub.is_alive()

