"""Job queue benchmark: enqueue->start latency and throughput, SQLite and PostgreSQL, 2 workers.

    .venv/bin/python benchmarks/queue.py [--jobs 300] [--burst 1000] [--pg-url postgresql://...]

Each backend gets two real `lorastudio worker` processes. Latency: jobs arrive one at a
time at random intervals (idle workers, as in real use) and the delay is `started_at -
created_at`, both from the database clock. Throughput: a burst of empty jobs, counted
from the first start to the last finish. Without `--pg-url` two throwaway PostgreSQL
servers are started (Debian's postgresql package; see tests/pg.py): one with default
durable settings ("postgresql") and one with fsync/synchronous_commit off ("pg-nofsync",
like the test server), to show what the disk's flush costs. SQLite runs in WAL mode with
synchronous=NORMAL, as in production.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named queue.py: keep its folder off sys.path, or it hides the stdlib `queue`.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))  # the throwaway PostgreSQL helper lives with the tests

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402

from lorastudio.service.jobs import open_store  # noqa: E402
from lorastudio.service.workspace import Workspace  # noqa: E402
from pg import throwaway_postgres  # noqa: E402

EMPTY_JOB = {"seconds": 0, "steps": 0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_workers(url: str, workspace: Workspace, n: int, logs: Path) -> list[subprocess.Popen]:
    env = dict(os.environ, LORASTUDIO_HOME=str(workspace.root))
    procs = []
    for i in range(n):
        cmd = [sys.executable, "-c", "from lorastudio.cli import main; main()", "worker", "--queue", url]
        cmd += ["--id", f"bench-{i}"]
        log = open(logs / f"worker-{i}.log", "w")  # noqa: SIM115 (lives as long as the process)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_all(store, ids: list[str], timeout: float = 120.0) -> list:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        pending = {i for i in pending if not store.get(i).finished}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs unfinished after {timeout:.0f}s")
        if pending:
            time.sleep(0.05)
    return [store.get(i) for i in ids]


def start_latencies_ms(store, n: int, rng: random.Random, min_gap: float, max_gap: float) -> list[float]:
    """Enqueue `n` jobs one at a time, `min_gap..max_gap` s apart; enqueue->start delays (database clock)."""
    ids = []
    for _ in range(n):
        time.sleep(rng.uniform(min_gap, max_gap))
        ids.append(store.enqueue("sleep", EMPTY_JOB).id)
    return [(j.started_at - j.created_at) * 1000 for j in wait_all(store, ids)]


def measure(
    name: str, url: str, workspace: Workspace, jobs: int, idle_jobs: int, burst: int, logs: Path
) -> dict:
    store = open_store(url, workspace)
    workers = start_workers(url, workspace, 2, logs)
    try:
        warm = [store.enqueue("sleep", EMPTY_JOB).id for _ in range(4)]
        wait_all(store, warm, timeout=60)

        rng = random.Random(0)
        latencies_ms = start_latencies_ms(store, jobs, rng, 0.02, 0.08)
        idle_ms = start_latencies_ms(store, idle_jobs, rng, 0.3, 0.6)

        t0 = time.perf_counter()
        burst_ids = [store.enqueue("sleep", EMPTY_JOB).id for _ in range(burst)]
        enqueue_s = time.perf_counter() - t0
        done = wait_all(store, burst_ids)
        span = max(j.finished_at for j in done) - min(j.started_at for j in done)
        by_worker = {}
        for j in done:
            by_worker[j.worker] = by_worker.get(j.worker, 0) + 1
        twice = [j.id for j in done if j.attempt != 1 or j.state != "succeeded"]
    finally:
        stop_workers(workers)
        store.close()
    return {
        "backend": name,
        "latency_p50_ms": statistics.median(latencies_ms),
        "latency_p95_ms": percentile(latencies_ms, 0.95),
        "latency_max_ms": max(latencies_ms),
        "idle_p50_ms": statistics.median(idle_ms),
        "idle_p95_ms": percentile(idle_ms, 0.95),
        "jobs_per_s": burst / span,
        "enqueue_per_s": burst / enqueue_s,
        "per_worker": sorted(by_worker.values()),
        "not_clean": len(twice),
    }


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'backend':11} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'idle p50':>9} {'idle p95':>9}"
        f" {'jobs/s':>8} {'enqueue/s':>10}  split"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['backend']:11} {r['latency_p50_ms']:8.2f} {r['latency_p95_ms']:8.2f} {r['latency_max_ms']:8.2f}"
            f" {r['idle_p50_ms']:9.2f} {r['idle_p95_ms']:9.2f}"
            f" {r['jobs_per_s']:8.0f} {r['enqueue_per_s']:10.0f}  {r['per_worker']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300, help="jobs for the latency run (one at a time)")
    parser.add_argument(
        "--idle-jobs", type=int, default=20, help="jobs arriving 0.3-0.6 s apart (idle workers)"
    )
    parser.add_argument("--burst", type=int, default=1000, help="jobs for the throughput run (all at once)")
    parser.add_argument("--pg-url", help="use this PostgreSQL database instead of a throwaway server")
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--json", dest="json_out", help="also write the results to this file")
    args = parser.parse_args()

    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="queue-bench-")))
        workspace = Workspace.open(tmp / "studio")
        sqlite_url = f"sqlite:///{workspace.db_path}"
        rows.append(measure("sqlite", sqlite_url, workspace, args.jobs, args.idle_jobs, args.burst, tmp))
        if args.pg_url:
            rows.append(
                measure("postgresql", args.pg_url, workspace, args.jobs, args.idle_jobs, args.burst, tmp)
            )
        elif not args.skip_pg:
            for durable, name in ((True, "postgresql"), (False, "pg-nofsync")):
                with throwaway_postgres(durable=durable) as server:
                    url = server.create_database()
                    rows.append(measure(name, url, workspace, args.jobs, args.idle_jobs, args.burst, tmp))
    print(
        f"2 workers; latency: {args.jobs} jobs arriving every 20-80 ms, idle: {args.idle_jobs} jobs"
        f" every 0.3-0.6 s; throughput: a burst of {args.burst} empty jobs"
    )
    print_table(rows)
    if any(r["not_clean"] for r in rows):
        raise SystemExit("some jobs did not succeed on their first attempt")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
