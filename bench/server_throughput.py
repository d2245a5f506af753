"""Throughput and latency of a real `bosun server` process, over SQLite and PostgreSQL.

Three workloads, each against a fresh database and a fresh server process:

1. enqueue+dequeue pairs/s: a few client threads loop `tasks.enqueue` + `queues.get_next_task`
   over pre-created tasks.
2. log lines ingested/s: a few client threads send `events.add_batch` JSON-lines batches of log
   events; the total is checked with `events.get_task_log` afterwards.
3. hand-out latency with M long-polling agents: M waiters (asyncio, one process) loop
   `queues.get_next_task` with `wait_sec` on one queue while a producer enqueues K tasks at a
   steady rate; reports enqueue-to-agent latency, the plain latency of an empty-queue
   `get_next_task`, and checks that every task is handed out exactly once.

Run `bench/run --quick` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bosun.api.errors import ApiError  # noqa: E402
from bosun.client import Session  # noqa: E402
from bosun.client.session import API_PREFIX, ConnectionFailed  # noqa: E402
from tests.support.postgres_cluster import PostgresCluster  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

BACKENDS = ("sqlite", "postgresql")
KEY, SECRET = "bench", "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGET_PAIRS_PER_S = 2000.0
TARGET_LOG_LINES_PER_S = 50_000.0
TARGET_P99_DEQUEUE_MS = 50.0
TARGET_AGENTS = 200
TARGET_P99_ENQUEUE_MS = 100.0  # with 500 long-polling agents


@dataclass(frozen=True)
class Sizes:
    pairs: int  # tasks enqueued and dequeued in workload 1
    pair_threads: int
    log_batches: int  # batches per sender in workload 2
    log_batch_size: int
    log_senders: int
    agent_tasks: int  # K in workload 3
    enqueue_rate: float  # tasks/s the producer aims for in workload 3
    wait_sec: float  # the agents' long-poll wait
    empty_calls: int  # sequential empty-queue get_next_task calls


QUICK = Sizes(pairs=2000, pair_threads=4, log_batches=15, log_batch_size=1000, log_senders=4,
              agent_tasks=300, enqueue_rate=50.0, wait_sec=10.0, empty_calls=300)
FULL = Sizes(pairs=10_000, pair_threads=4, log_batches=60, log_batch_size=1000, log_senders=4,
             agent_tasks=2000, enqueue_rate=100.0, wait_sec=10.0, empty_calls=2000)


# --- small helpers ---------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its waited-for children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # After the ")" the fields start at index 3 (state); utime is 14, stime 15, cutime 16,
    # cstime 17 in the 1-based numbering of proc(5).
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


@dataclass
class CpuMeter:
    """CPU used by the server process and by this benchmark process over a phase."""

    server_pid: int
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuMeter]:
        wall0, srv0, cli0 = time.perf_counter(), proc_cpu_seconds(self.server_pid), \
            time.process_time()
        try:
            yield self
        finally:
            self.wall = time.perf_counter() - wall0
            self.server_cpu = proc_cpu_seconds(self.server_pid) - srv0
            self.client_cpu = time.process_time() - cli0

    def as_dict(self) -> dict[str, float]:
        wall = self.wall or float("nan")
        return {"server_cpu_pct": round(100.0 * self.server_cpu / wall, 1),
                "client_cpu_pct": round(100.0 * self.client_cpu / wall, 1)}


@dataclass
class Errors:
    """Client-side failures of a workload: counted, with the first few messages kept."""

    count: int = 0
    samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, exc: BaseException | str) -> None:
        with self.lock:
            self.count += 1
            if len(self.samples) < 5:
                kind = "" if isinstance(exc, str) else f"{type(exc).__name__}: "
                self.samples.append(f"{what}: {kind}{exc}")


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts)]


def create_tasks(url: str, count: int, prefix: str, threads: int = 4) -> list[str]:
    ids: list[list[str]] = [[] for _ in range(threads)]

    def work(index: int) -> None:
        with Session(url, KEY, SECRET) as api:
            for n in range(index, count, threads):
                ids[index].append(api.call("tasks.create", {"name": f"{prefix}-{n}"})["id"])

    run_threads(threads, work)
    return [task_id for chunk in ids for task_id in chunk]


def new_queue(api: Session, name: str) -> str:
    queue_id: str = api.call("queues.create", {"name": name})["id"]
    return queue_id


def run_clients(server: ServerProcess, count: int,
                work: Callable[[Session, int], None]) -> CpuMeter:
    """`count` client threads, each with its own logged-in session, start `work` together; the
    meter covers them from that start to the end of the last one."""
    barrier = threading.Barrier(count + 1)

    def client(index: int) -> None:
        with Session(server.url, KEY, SECRET) as api:
            api.login()
            barrier.wait()
            work(api, index)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    meter = CpuMeter(server.proc.pid if server.proc else 0)
    barrier.wait()
    with meter.measure():
        for thread in threads:
            thread.join()
    return meter


# --- workload 1: enqueue + get_next_task pairs -----------------------------------------------


def bench_pairs(server: ServerProcess, sizes: Sizes) -> dict[str, Any]:
    with Session(server.url, KEY, SECRET) as api:
        queue_id = new_queue(api, "bench-pairs")
    task_ids = create_tasks(server.url, sizes.pairs, "pair")
    chunks = split(task_ids, sizes.pair_threads)
    got: list[list[str]] = [[] for _ in chunks]
    empty = [0] * len(chunks)
    errs = Errors()

    def work(api: Session, index: int) -> None:
        for task_id in chunks[index]:
            try:
                api.call("tasks.enqueue", {"task": task_id, "queue": queue_id})
                entry = api.call("queues.get_next_task", {"queue": queue_id}).get("entry")
            except (ApiError, ConnectionFailed) as exc:
                errs.add("pair", exc)
                continue
            if entry:
                got[index].append(entry["task"])
            else:
                empty[index] += 1

    meter = run_clients(server, len(chunks), work)
    # Whatever a pair's get_next_task missed (another thread took its task first and the queue
    # was momentarily empty for it) is still queued: drain it, so the exactly-once check is whole.
    drained: list[str] = []
    with Session(server.url, KEY, SECRET) as api:
        while True:
            entry = api.call("queues.get_next_task", {"queue": queue_id}).get("entry")
            if not entry:
                break
            drained.append(entry["task"])
    handed = [t for chunk in got for t in chunk] + drained
    counts = Counter(handed)
    pairs_done = sum(len(c) for c in got)
    return {
        "pairs": len(task_ids), "threads": len(chunks), "seconds": round(meter.wall, 3),
        "pairs_per_s": round(pairs_done / meter.wall, 1) if meter.wall else 0.0,
        "empty_answers": sum(empty), "drained_after": len(drained),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "missing": len(set(task_ids) - set(counts)),
        "errors": errs.count, "error_samples": errs.samples, **meter.as_dict(),
    }


# --- workload 2: log lines via events.add_batch ----------------------------------------------


def log_batch(task_id: str, start: int, size: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    batch = []
    for n in range(start, start + size):
        msg = f"bench log line {n:09d} " + "x" * 74  # ~100 bytes
        batch.append({"type": "log", "task": task_id, "timestamp": now, "level": "info",
                      "worker": "bench", "msg": msg})
    return batch


def bench_logs(server: ServerProcess, sizes: Sizes) -> dict[str, Any]:
    task_ids = create_tasks(server.url, sizes.log_senders, "logs", threads=1)
    # Build the bodies up front: the timed loop should measure the server, not json.dumps.
    bodies = [[log_batch(t, b * sizes.log_batch_size, sizes.log_batch_size)
               for b in range(sizes.log_batches)] for t in task_ids]
    added = [0] * len(task_ids)
    errs = Errors()

    def work(api: Session, index: int) -> None:
        for batch in bodies[index]:
            try:
                data = api.add_events(batch)
            except (ApiError, ConnectionFailed) as exc:
                errs.add("add_batch", exc)
                continue
            added[index] += int(data.get("added", 0))
            if data.get("errors"):
                errs.add("add_batch", f"{data['errors']} rejected: {data.get('errors_info')}")

    meter = run_clients(server, len(task_ids), work)
    sent = sizes.log_senders * sizes.log_batches * sizes.log_batch_size
    with Session(server.url, KEY, SECRET) as api:
        stored = sum(int(api.call("events.get_task_log", {"task": t, "batch_size": 1})["total"])
                     for t in task_ids)
    return {
        "lines_sent": sent, "lines_added": sum(added), "lines_stored": stored,
        "senders": len(task_ids), "batch_size": sizes.log_batch_size,
        "seconds": round(meter.wall, 3),
        "lines_per_s": round(sum(added) / meter.wall, 1) if meter.wall else 0.0,
        "total_ok": stored == sent, "errors": errs.count, "error_samples": errs.samples,
        **meter.as_dict(),
    }


# --- workload 3: long-polling agents ---------------------------------------------------------


def _token(url: str) -> str:
    with Session(url, KEY, SECRET) as api:
        return api.login()


async def _call(client: httpx.AsyncClient, endpoint: str, body: dict[str, Any],
                timeout: float | None = None) -> dict[str, Any]:
    response = await client.post(f"{API_PREFIX}/{endpoint}", json=body,
                                 timeout=timeout if timeout is not None
                                 else httpx.USE_CLIENT_DEFAULT)
    payload = response.json()
    meta = payload["meta"]
    if meta.get("result_code") != 200:
        raise ApiError(meta.get("result_code") or response.status_code,
                       meta.get("result_subcode") or 0, meta.get("result_msg") or "error")
    data: dict[str, Any] = payload.get("data") or {}
    return data


async def _empty_latencies(client: httpx.AsyncClient, queue_id: str, calls: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        data = await _call(client, "queues.get_next_task", {"queue": queue_id})
        latencies.append((time.perf_counter() - started) * 1000.0)
        if data.get("entry"):
            raise RuntimeError("the empty queue handed out a task")
    return latencies


async def _agents_run(url: str, sizes: Sizes, agents: int, task_ids: list[str],
                      work_queue: str, empty_queue: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {_token(url)}", "X-ClearML-Worker": "bench-agent"}
    limits = httpx.Limits(max_connections=agents + 8, max_keepalive_connections=agents + 8)
    timeout = httpx.Timeout(sizes.wait_sec + 30.0, connect=30.0, pool=60.0)
    errs = Errors()
    enqueued_at: dict[str, float] = {}
    received: list[tuple[str, float, int]] = []
    all_received = asyncio.Event()
    stop = asyncio.Event()
    polls = [0]
    enqueue_calls: list[float] = []  # how long each tasks.enqueue call took, ms

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=timeout) as pool, \
            httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout) as solo:
        # Plain call latency on an idle server (one client, sequential, no wait).
        await _empty_latencies(solo, empty_queue, 20)  # warm-up
        idle = await _empty_latencies(solo, empty_queue, sizes.empty_calls)

        async def agent(number: int) -> None:
            while not stop.is_set():
                try:
                    data = await _call(pool, "queues.get_next_task",
                                       {"queue": work_queue, "wait_sec": sizes.wait_sec})
                except (ApiError, httpx.HTTPError, ValueError, KeyError) as exc:
                    errs.add(f"agent {number}", exc)
                    await asyncio.sleep(0.1)
                    continue
                polls[0] += 1
                entry = data.get("entry")
                if entry:
                    received.append((entry["task"], time.perf_counter(), number))
                    if len(received) >= len(task_ids):
                        all_received.set()

        agent_tasks = [asyncio.create_task(agent(n)) for n in range(agents)]
        await asyncio.sleep(2.0)  # let every agent connect and park in its long poll

        async def producer() -> float:
            interval = 1.0 / sizes.enqueue_rate
            start = time.perf_counter()
            for n, task_id in enumerate(task_ids):
                delay = start + n * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                enqueued_at[task_id] = time.perf_counter()
                try:
                    await _call(solo, "tasks.enqueue", {"task": task_id, "queue": work_queue})
                    enqueue_calls.append((time.perf_counter() - enqueued_at[task_id]) * 1000)
                except (ApiError, httpx.HTTPError, ValueError, KeyError) as exc:
                    errs.add("enqueue", exc)
                    enqueued_at.pop(task_id, None)
            return time.perf_counter() - start

        produce_seconds = await producer()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_received.wait(), sizes.wait_sec + 5.0)
        # Plain call latency again, now with the agents parked in their long polls.
        parked = await _empty_latencies(solo, empty_queue, sizes.empty_calls)
        stop.set()
        for task in agent_tasks:
            task.cancel()
        await asyncio.gather(*agent_tasks, return_exceptions=True)

    counts = Counter(task_id for task_id, _, _ in received)
    latencies = [(t - enqueued_at[task_id]) * 1000.0 for task_id, t, _ in received
                 if task_id in enqueued_at]
    return {
        "agents": agents, "tasks": len(task_ids), "wait_sec": sizes.wait_sec,
        "enqueue_rate_target": sizes.enqueue_rate,
        "enqueue_rate_achieved": round(len(task_ids) / produce_seconds, 1),
        "received": len(received), "distinct_received": len(counts),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "missing": len(set(task_ids) - set(counts)),
        "agents_that_got_work": len({n for _, _, n in received}),
        "polls": polls[0],
        "handout_p50_ms": round(percentile(latencies, 50), 2),
        "handout_p99_ms": round(percentile(latencies, 99), 2),
        "handout_max_ms": round(max(latencies, default=float("nan")), 2),
        "enqueue_call_p50_ms": round(percentile(enqueue_calls, 50), 2),
        "enqueue_call_p99_ms": round(percentile(enqueue_calls, 99), 2),
        "empty_idle_p50_ms": round(percentile(idle, 50), 2),
        "empty_idle_p99_ms": round(percentile(idle, 99), 2),
        "empty_parked_p50_ms": round(percentile(parked, 50), 2),
        "empty_parked_p99_ms": round(percentile(parked, 99), 2),
        "errors": errs.count, "error_samples": errs.samples,
    }


def bench_agents(server: ServerProcess, sizes: Sizes, agents: int) -> dict[str, Any]:
    with Session(server.url, KEY, SECRET) as api:
        work_queue = new_queue(api, "bench-agents")
        empty_queue = new_queue(api, "bench-empty")
    task_ids = create_tasks(server.url, sizes.agent_tasks, "agent")
    meter = CpuMeter(server.proc.pid if server.proc else 0)
    with meter.measure():
        result = asyncio.run(_agents_run(server.url, sizes, agents, task_ids, work_queue,
                                         empty_queue))
    if result["missing"]:
        # Where are the missing tasks? Still queued means not lost, just not handed out in time.
        with Session(server.url, KEY, SECRET) as api:
            queued = api.call("queues.get_by_id", {"queue": work_queue})["queue"]["entries"]
        result["missing_still_queued"] = len(queued)
    return {**result, "seconds": round(meter.wall, 3), **meter.as_dict()}


# --- running a backend -----------------------------------------------------------------------


def server_log_problems(log: str) -> list[str]:
    lines = [ln for ln in log.splitlines()
             if any(w in ln for w in ("Traceback", "ERROR", "Exception", "failed"))]
    return lines[:10]


def run_backend(db: str, sizes: Sizes, agents: int, label: str) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": label}
    server = ServerProcess(db).start()
    try:
        for name, run in (("pairs", lambda: bench_pairs(server, sizes)),
                          ("logs", lambda: bench_logs(server, sizes)),
                          ("agents", lambda: bench_agents(server, sizes, agents))):
            started = time.perf_counter()
            print(f"[{label}] {name} ...", file=sys.stderr, flush=True)
            try:
                result[name] = run()
            except Exception as exc:  # keep the other workloads and backends going
                result[name] = {"failed": f"{type(exc).__name__}: {exc}"}
            print(f"[{label}] {name} done in {time.perf_counter() - started:.1f}s: "
                  f"{json.dumps(result[name])}", file=sys.stderr, flush=True)
        result["server_log_problems"] = server_log_problems(server.log())
    finally:
        server.stop()
    return result


def run_sqlite(sizes: Sizes, agents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bosun-bench-") as tmp:
        return run_backend(str(Path(tmp) / "bench.db"), sizes, agents, "sqlite")


def run_postgresql(sizes: Sizes, agents: int) -> dict[str, Any]:
    try:
        cluster = PostgresCluster(durable=True).start()
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        return {"backend": "postgresql", "skipped": f"PostgreSQL is not available: {first}"}
    try:
        return run_backend(cluster.create_database("bench"), sizes, agents, "postgresql")
    finally:
        cluster.stop()


# --- report ----------------------------------------------------------------------------------


def _get(result: dict[str, Any] | None, workload: str, key: str) -> Any:
    if not result or "skipped" in result:
        return None
    return (result.get(workload) or {}).get(key)


def _num(value: Any, fmt: str, ok: Callable[[float], bool] | None = None) -> str:
    if value is None:
        return "n/a"
    text = format(value, fmt)
    if ok is not None:
        text += "" if ok(float(value)) else " (miss)"
    return text


def table(results: dict[str, dict[str, Any]], agents: int) -> str:
    rows: list[tuple[str, str, Callable[[dict[str, Any] | None], str]]] = []

    def metric(label: str, target: str, workload: str, key: str, fmt: str,
               ok: Callable[[float], bool] | None = None) -> None:
        rows.append((label, target, lambda r: _num(_get(r, workload, key), fmt, ok)))

    def once(workload: str) -> Callable[[dict[str, Any] | None], str]:
        def cell(r: dict[str, Any] | None) -> str:
            data = (r or {}).get(workload)
            if not data or "failed" in data:
                return "n/a"
            total = data.get("pairs", data.get("tasks"))
            bad = data["duplicates"] or data["missing"]
            return (f"{'NO' if bad else 'yes'} ({data['duplicates']} dup, "
                    f"{data['missing']} missing of {total})")
        return cell

    def failures(r: dict[str, Any] | None) -> str:
        if not r or "skipped" in r:
            return "n/a"
        count = sum(int((r.get(w) or {}).get("errors", 0)) for w in ("pairs", "logs", "agents"))
        failed = [w for w in ("pairs", "logs", "agents") if "failed" in (r.get(w) or {})]
        log_lines = len(r.get("server_log_problems") or [])
        text = f"{count} client, {log_lines} server log"
        return text + (f"; FAILED: {', '.join(failed)}" if failed else "")

    def log_total(r: dict[str, Any] | None) -> str:
        data = (r or {}).get("logs")
        if not data or "failed" in data:
            return "n/a"
        return f"{'yes' if data['total_ok'] else 'NO'} ({data['lines_stored']}/" \
               f"{data['lines_sent']})"

    metric("enqueue+dequeue pairs/s", f">= {TARGET_PAIRS_PER_S:.0f}", "pairs", "pairs_per_s",
           ".0f", lambda v: v >= TARGET_PAIRS_PER_S)
    rows.append(("  server / bench CPU % (pairs)", "",
                 lambda r: f"{_num(_get(r, 'pairs', 'server_cpu_pct'), '.0f')}"
                 f" / {_num(_get(r, 'pairs', 'client_cpu_pct'), '.0f')}"))
    rows.append(("  pairs handed out exactly once", "yes", once("pairs")))
    metric("log lines ingested/s", f">= {TARGET_LOG_LINES_PER_S:.0f}", "logs", "lines_per_s",
           ".0f", lambda v: v >= TARGET_LOG_LINES_PER_S)
    rows.append(("  server / bench CPU % (logs)", "",
                 lambda r: f"{_num(_get(r, 'logs', 'server_cpu_pct'), '.0f')}"
                 f" / {_num(_get(r, 'logs', 'client_cpu_pct'), '.0f')}"))
    rows.append(("  get_task_log total matches", "yes", log_total))
    p99_ok = (lambda v: v < TARGET_P99_DEQUEUE_MS) if agents >= TARGET_AGENTS else None
    metric(f"enqueue->agent p50 ms ({agents} agents)", "", "agents", "handout_p50_ms", ".1f")
    metric(f"enqueue->agent p99 ms ({agents} agents)",
           f"< {TARGET_P99_DEQUEUE_MS:.0f} ({TARGET_AGENTS} agents)", "agents", "handout_p99_ms",
           ".1f", p99_ok)
    metric("  producer enqueues/s (achieved)", "", "agents", "enqueue_rate_achieved", ".0f")
    metric(f"tasks.enqueue call p50 ms ({agents} agents polling)", "", "agents",
           "enqueue_call_p50_ms", ".1f")
    metric(f"tasks.enqueue call p99 ms ({agents} agents polling)",
           f"< {TARGET_P99_ENQUEUE_MS:.0f} (500 agents)", "agents", "enqueue_call_p99_ms", ".1f",
           (lambda v: v < TARGET_P99_ENQUEUE_MS) if agents >= 500 else None)
    rows.append(("  agent tasks handed out exactly once", "yes", once("agents")))
    metric("empty get_next_task p50 ms (idle)", "", "agents", "empty_idle_p50_ms", ".2f")
    metric("empty get_next_task p99 ms (idle)", "", "agents", "empty_idle_p99_ms", ".2f")
    metric(f"empty get_next_task p50 ms ({agents} parked)", "", "agents",
           "empty_parked_p50_ms", ".2f")
    metric(f"empty get_next_task p99 ms ({agents} parked)", "", "agents",
           "empty_parked_p99_ms", ".2f")
    rows.append(("errors", "0", failures))

    lines = ["| metric | sqlite | postgresql | target |", "|---|---|---|---|"]
    for label, target, cell in rows:
        cells = []
        for backend in BACKENDS:
            r = results.get(backend)
            if r is None:
                cells.append("not run")
            elif "skipped" in r:
                cells.append("skipped")
            else:
                cells.append(cell(r))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="smaller N/K: well under a minute per backend")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--agents", type=int, default=TARGET_AGENTS,
                        help=f"simulated long-polling agents (default {TARGET_AGENTS})")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.agents < 1:
        parser.error("--agents must be at least 1")
    sizes = QUICK if args.quick else FULL
    backends = BACKENDS if args.backend == "both" else (args.backend,)

    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        runner = run_sqlite if backend == "sqlite" else run_postgresql
        results[backend] = runner(sizes, args.agents)

    print(table(results, args.agents))
    for backend, r in results.items():
        if "skipped" in r:
            print(f"\nnote: {backend} skipped: {r['skipped']}")
            continue
        for workload in ("pairs", "logs", "agents"):
            data = r.get(workload) or {}
            if "failed" in data:
                print(f"\nnote: {backend} {workload} failed: {data['failed']}")
            for sample in data.get("error_samples") or []:
                print(f"\nnote: {backend} {workload} error: {sample}")
        for line in r.get("server_log_problems") or []:
            print(f"note: {backend} server log: {line}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"benchmark": "server_throughput", "quick": args.quick, "agents": args.agents,
               "sizes": sizes.__dict__, "machine": {"cpus": os.cpu_count(),
                                                    "python": platform.python_version()},
               "targets": {"pairs_per_s": TARGET_PAIRS_PER_S,
                           "log_lines_per_s": TARGET_LOG_LINES_PER_S,
                           "handout_p99_ms": TARGET_P99_DEQUEUE_MS,
                           "agents": TARGET_AGENTS},
               "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
