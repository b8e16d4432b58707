"""One conformance suite for the job queue, run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.jobs import LeaseLost, open_store

SHORT_LEASE = 0.3


@pytest.fixture
def make_store(queue_url, workspace):  # noqa: F811
    """Each call opens another connection to the same queue, like another process would."""
    stores = []

    def make(lease_s: float = 30.0, **options):
        store = open_store(queue_url, workspace, lease_s=lease_s, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


def claim_ids(store, n, worker="w", **kwargs):
    return [store.claim(worker, **kwargs).id for _ in range(n)]


def expire(store, job, lease_s=SHORT_LEASE):
    """Wait until a lease of `lease_s` taken by `job` has certainly expired."""
    time.sleep(lease_s + 0.15)


# --- submitting and reading ---------------------------------------------------------------


def test_enqueue_stores_all_fields(store):
    job = store.enqueue(
        "sleep", {"seconds": 2, "名前": "キャラ"}, priority=3, user="ann", affinity="sd15", max_attempts=5
    )
    again = store.get(job.id)
    assert again == job
    assert (again.kind, again.state, again.priority, again.user, again.affinity) == (
        "sleep",
        "queued",
        3,
        "ann",
        "sd15",
    )
    assert again.payload == {"seconds": 2, "名前": "キャラ"}
    assert (again.attempt, again.max_attempts, again.progress, again.worker) == (0, 5, 0.0, None)
    assert abs(again.created_at - store.now()) < 5
    assert [(e.seq, e.type) for e in store.events(job.id)] == [(1, "queued")]


def test_get_unknown_job_names_it(store):
    with pytest.raises(NotFoundError, match="job nope: not found"):
        store.get("nope")


def test_bad_payload_and_state_filter_are_clear_errors(store):
    with pytest.raises(LorastudioError, match="not JSON-serialisable"):
        store.enqueue("sleep", {"x": object()})
    with pytest.raises(LorastudioError, match="unknown; use one of"):
        store.list_jobs(state="done")
    assert store.list_jobs() == []


def test_list_filters_by_state_and_user_newest_first(store):
    a = store.enqueue("sleep", user="ann")
    b = store.enqueue("sleep", user="bob")
    c = store.enqueue("sleep", user="ann")
    store.cancel(c.id)
    assert [j.id for j in store.list_jobs()] == [c.id, b.id, a.id]
    assert [j.id for j in store.list_jobs(user="ann")] == [c.id, a.id]
    assert [j.id for j in store.list_jobs(state="queued")] == [b.id, a.id]


# --- claim order --------------------------------------------------------------------------


def test_claim_is_fifo_within_a_priority(store):
    ids = [store.enqueue("sleep").id for _ in range(4)]
    assert claim_ids(store, 4) == ids
    assert store.claim("w") is None


def test_claim_prefers_higher_priority(store):
    low = store.enqueue("sleep", priority=0)
    high = store.enqueue("sleep", priority=10)
    mid = store.enqueue("sleep", priority=5)
    assert claim_ids(store, 3) == [high.id, mid.id, low.id]


def test_claim_prefers_jobs_for_a_loaded_model_then_priority(store):
    other = store.enqueue("sleep", affinity="sdxl", priority=9)
    plain = store.enqueue("sleep", priority=5)
    mine = store.enqueue("sleep", affinity="sd15")
    assert store.claim("w", loaded={"sd15"}).id == mine.id
    # without a loaded match: priority, and a job without affinity is not pushed back
    assert store.claim("w", loaded={"sd15"}).id == other.id
    assert store.claim("w", loaded={"sd15"}).id == plain.id


def test_claim_shares_fairly_between_users(store):
    a1, a2, a3 = (store.enqueue("sleep", user="ann") for _ in range(3))
    b1 = store.enqueue("sleep", user="bob")
    c1 = store.enqueue("sleep", user="cat")
    # ann has a running job after the first claim, so bob and cat go before her next ones.
    assert claim_ids(store, 5) == [a1.id, b1.id, c1.id, a2.id, a3.id]


def test_claim_only_takes_kinds_the_worker_serves(store):
    train = store.enqueue("train")
    assert store.claim("w", kinds=["sleep"]) is None
    assert store.claim("w", kinds=[]) is None
    assert store.claim("w", kinds=["train", "sleep"]).id == train.id


def test_claim_sets_running_state_and_lease(store):
    job = store.enqueue("sleep")
    claimed = store.claim("gpu-box:cuda:0", lease_s=10)
    assert claimed.id == job.id
    assert (claimed.state, claimed.attempt, claimed.worker, claimed.resumed) == (
        "running",
        1,
        "gpu-box:cuda:0",
        False,
    )
    assert 9 < claimed.lease_until - claimed.started_at <= 10.01
    assert [e.type for e in store.events(job.id)] == ["queued", "started"]


def test_concurrent_claims_never_share_a_job(make_store):
    first = make_store()
    ids = {first.enqueue("sleep").id for _ in range(30)}
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(store, name):
        while (job := store.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    stores = [make_store() for _ in range(4)]
    threads = [threading.Thread(target=drain, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(claimed) == sorted(ids)


# --- cancel -------------------------------------------------------------------------------


def test_cancel_queued_job_is_immediate(store):
    job = store.enqueue("sleep")
    cancelled = store.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at is not None
    assert store.claim("w") is None
    assert [e.type for e in store.events(job.id)] == ["queued", "cancelled"]


def test_cancel_running_job_sets_a_flag_the_handler_reads(store):
    job = store.enqueue("sleep")
    claimed = store.claim("w")
    assert store.progress(job.id, claimed.attempt, 0.2) is False
    flagged = store.cancel(job.id)
    assert flagged.state == "running" and flagged.cancel_requested
    assert store.is_cancel_requested(job.id)
    assert store.progress(job.id, claimed.attempt, 0.3) is True
    assert store.finish(job.id, claimed.attempt, "cancelled", error="cancelled by request")
    assert store.get(job.id).state == "cancelled"
    # cancelling a finished job changes nothing
    assert store.cancel(job.id).state == "cancelled"
    assert [e.type for e in store.events(job.id)][-2:] == ["progress", "cancelled"]


# --- leases, reaping, attempts ----------------------------------------------------------


def test_heartbeat_keeps_the_lease_and_reap_requeues_an_expired_one(make_store):
    store = make_store(lease_s=SHORT_LEASE)
    job = store.enqueue("sleep")
    claimed = store.claim("w1")
    for _ in range(3):  # heartbeats for ~2x the lease: nothing is reaped
        time.sleep(SHORT_LEASE / 3)
        assert store.heartbeat(job.id, claimed.attempt)
        assert store.reap() == []
    expire(store, job)
    reaped = store.reap()
    assert [(j.id, j.state, j.worker) for j in reaped] == [(job.id, "queued", None)]
    assert "lease expired" in reaped[0].error
    again = store.claim("w2")
    assert (again.id, again.attempt, again.resumed, again.worker) == (job.id, 2, True, "w2")
    assert [e.type for e in store.events(job.id)] == ["queued", "started", "requeued", "started"]


def test_stale_worker_cannot_record_anything(make_store):
    store = make_store(lease_s=SHORT_LEASE)
    job = store.enqueue("sleep")
    stale = store.claim("w1")
    expire(store, job)
    store.reap()
    fresh = store.claim("w2", lease_s=30)
    assert not store.heartbeat(job.id, stale.attempt)
    with pytest.raises(LeaseLost):
        store.progress(job.id, stale.attempt, 0.9)
    with pytest.raises(LeaseLost):
        store.emit(job.id, stale.attempt, "log", {"line": "late"})
    assert store.finish(job.id, stale.attempt, result={"by": "w1"}) is False
    assert store.finish(job.id, fresh.attempt, result={"by": "w2"}) is True
    assert store.finish(job.id, fresh.attempt, result={"by": "w2 again"}) is False
    done = store.get(job.id)
    assert (done.state, done.result, done.progress) == ("succeeded", {"by": "w2"}, 1.0)
    assert [e.type for e in store.events(job.id)].count("succeeded") == 1


def test_attempt_cap_fails_the_job(make_store):
    store = make_store(lease_s=SHORT_LEASE)
    job = store.enqueue("sleep", max_attempts=2)
    store.claim("w1")
    expire(store, job)
    assert [j.state for j in store.reap()] == ["queued"]
    store.claim("w2")
    expire(store, job)
    failed = store.reap()
    assert [(j.id, j.state) for j in failed] == [(job.id, "failed")]
    assert "attempt 2 of 2" in failed[0].error and failed[0].finished_at is not None
    assert store.claim("w3") is None


def test_expired_job_with_a_cancel_request_is_cancelled_not_requeued(make_store):
    store = make_store(lease_s=SHORT_LEASE)
    job = store.enqueue("sleep")
    store.claim("w1")
    store.cancel(job.id)
    expire(store, job)
    assert [j.state for j in store.reap()] == ["cancelled"]


def test_recover_requeues_a_restarted_workers_jobs_at_once(make_store):
    store = make_store(lease_s=30)
    mine = store.enqueue("sleep")
    theirs = store.enqueue("sleep")
    store.claim("box:cuda:0")
    store.claim("box:cuda:1")
    restarted = make_store(lease_s=30)
    recovered = restarted.recover("box:cuda:0")
    assert [(j.id, j.state) for j in recovered] == [(mine.id, "queued")]
    assert restarted.get(theirs.id).state == "running"
    assert restarted.claim("box:cuda:0").attempt == 2


def test_release_hands_the_job_back_or_marks_it_interrupted(store):
    job = store.enqueue("sleep", max_attempts=2)
    first = store.claim("w")
    assert store.release(job.id, first.attempt, "worker stopping")
    assert store.get(job.id).state == "queued"
    second = store.claim("w")
    assert store.release(job.id, second.attempt) and not store.release(job.id, second.attempt)
    assert store.get(job.id).state == "interrupted"


# --- events -------------------------------------------------------------------------------


def test_events_have_a_per_job_sequence_and_resume_after_seq(store):
    job = store.enqueue("sleep")
    other = store.enqueue("sleep")
    claimed = store.claim("w")
    for step in range(1, 6):
        store.progress(job.id, claimed.attempt, step / 5, {"step": step, "total": 5})
    assert store.emit(job.id, claimed.attempt, "preview", {"image": "p.png"}) == 8
    store.finish(job.id, claimed.attempt, result={"images": ["a.png"]})
    events = store.events(job.id)
    assert [e.seq for e in events] == list(range(1, 10))
    assert [e.type for e in events][:3] == ["queued", "started", "progress"]
    assert events[4].data == {"progress": 0.6, "step": 3, "total": 5}
    resumed = store.events(job.id, after_seq=6)
    assert [(e.seq, e.type) for e in resumed] == [(7, "progress"), (8, "preview"), (9, "succeeded")]
    assert resumed[-1].data["result"] == {"images": ["a.png"]}
    assert store.events(job.id, after_seq=9) == []
    assert [e.seq for e in store.events(other.id)] == [1]
    assert store.get(job.id).progress == 1.0


def test_wait_for_work_wakes_on_enqueue_from_another_connection(make_store):
    waiter, producer = make_store(), make_store()
    waiter.wait_for_work(0.01)  # PostgreSQL: the first call starts listening
    assert waiter.wait_for_work(0.05) is False
    woke: list[tuple[bool, float]] = []
    thread = threading.Thread(target=lambda: woke.append((waiter.wait_for_work(5.0), time.monotonic())))
    thread.start()
    time.sleep(0.1)
    enqueued = time.monotonic()
    producer.enqueue("sleep")
    thread.join(timeout=6)
    assert woke and woke[0][0] is True
    assert woke[0][1] - enqueued < 1.0


def test_purge_deletes_old_finished_jobs_and_their_events(store):
    done = store.enqueue("sleep")
    running = store.enqueue("sleep")
    queued = store.enqueue("sleep")
    claimed = store.claim("w")
    store.finish(done.id, claimed.attempt, result={})
    store.claim("w")
    assert store.purge(older_than_s=3600) == 0
    time.sleep(0.05)
    assert store.purge(older_than_s=0.01) == 1
    assert store.events(done.id) == []
    assert {j.id for j in store.list_jobs()} == {running.id, queued.id}


def test_open_store_resolves_urls(workspace, monkeypatch):
    monkeypatch.delenv("LORASTUDIO_QUEUE_URL", raising=False)
    with open_store(None, workspace) as default:
        assert default.backend == "sqlite" and default.path == workspace.db_path
    with open_store("sqlite:///queue/q.db", workspace) as relative:
        assert relative.path == workspace.root / "queue" / "q.db"
    with pytest.raises(LorastudioError, match="unknown backend"):
        open_store("redis://localhost", workspace)
    with pytest.raises(LorastudioError, match="sqlite:///studio.db"):
        open_store("sqlite://", workspace)


def test_wait_for_events_tells_one_listener_which_jobs_changed(make_store):
    listener, worker = make_store(), make_store()
    job = worker.enqueue("sleep")
    claimed = worker.claim("w")
    listener.wait_for_events(0.01)  # the first call starts listening
    assert listener.wait_for_events(0.05) == set()
    worker.progress(job.id, claimed.attempt, 0.5)
    worker.emit(job.id, claimed.attempt, "log", {"line": "x"})
    changed = listener.wait_for_events(2.0)
    # PostgreSQL names the jobs; SQLite only knows that something was committed.
    assert changed == ({job.id} if listener.backend == "postgresql" else None)
    assert [e.type for e in listener.events(job.id, after_seq=2)] == ["progress", "log"]
