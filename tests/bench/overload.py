#!/usr/bin/env python
"""Overload is shed, not queued: an open-loop generator at twice the capacity (a script, not a test).

    .venv/bin/python tests/bench/overload.py                       # capacity, 2x for 30 s, 0.5x for 20 s
    .venv/bin/python tests/bench/overload.py --factor 3 --overload-time 60
    .venv/bin/python tests/bench/overload.py --requests-in-flight 0      # without nginx's limit

The production stack (tests/harness/stack.py) with nginx's per-address limit raised (every request
comes from 127.0.0.1). First the capacity: a closed loop of 16 requests in flight on the task list
(supervisor, page 1 of 20). Then an open loop: requests are *sent on a schedule* at --factor times
that rate, whatever the answers (a closed loop would slow down with the server and never overload
it), and every latency is measured from the scheduled send time, so a late generator counts
against the server rather than hiding its queue. After --overload-time seconds the rate drops to
half the capacity. Prints per second: requests sent, served (200), shed (503: nginx's in-flight
limit or gunicorn's queue deadline), other failures, and the served p95; then the summary: p95/max
of served requests during overload, the shed share, how fast a 503 came, the longest answer of any
kind, and how long after the drop the SLA (p95 < 1 s over a 5-second window, no failures) held again.
--requests-in-flight compares nginx's limit (services.workorder.nginx.requestsInFlight; 0: none).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE))

from worker_class import measure

from harness.stack import Stack, StackOptions

PATH = "/api/tasks/?page=1&page_size=20"


def open_loop(port: int, token: str, schedule: list[float], t0: float, queue) -> None:
    """Send one request at each scheduled offset from t0 (wall clock, shared by the processes)."""
    queue.put(asyncio.run(_open_loop(port, token, schedule, t0)))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 response (Content-Length or chunked body): (status, connection closes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers.get(b"connection") == b"close"


async def _open_loop(port: int, token: str, schedule: list[float], t0: float) -> list[tuple[float, float, int]]:
    """Open loop on asyncio streams: a request is written at its time on an idle keep-alive connection
    (a new one if none is idle), whatever the answers to earlier ones; ~10x less CPU per request than
    threads with http.client, so the generator keeps to its schedule at twice the capacity."""
    request = (f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    results: list[tuple[float, float, int]] = []

    async def send(offset: float) -> None:
        connection = idle.pop() if idle else None
        status, closes = 0, True
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = connection
            writer.write(request)
            status, closes = await asyncio.wait_for(_read_response(reader), timeout=30)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, closes = 0, True
        results.append((offset, time.time() - t0 - offset, status))
        if connection is not None:
            if closes:
                connection[1].close()
            else:
                idle.append(connection)

    tasks = []
    for offset in schedule:
        delay = t0 + offset - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(offset)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return results


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=2.0, help="overload rate / capacity (default 2)")
    parser.add_argument("--overload-time", type=float, default=30.0)
    parser.add_argument("--recovery-time", type=float, default=20.0)
    parser.add_argument("--work-orders", type=int, default=20000)
    parser.add_argument("--processes", type=int, default=1, help="generator processes (asyncio each)")
    parser.add_argument("--requests-in-flight", type=int, default=None,
                        help="nginx's in-flight limit (0: none; default: the module's)")
    args = parser.parse_args()

    options = StackOptions(work_orders=args.work_orders, monitoring=False, rate_limit="100000r/s", rate_burst=100000,
                           requests_in_flight=args.requests_in_flight, nginx_access_log=False)
    with Stack(options) as stack:
        token = stack.login("loadtest-supervisor-0001")
        measure(stack.nginx.port, token, PATH, 16, 2, 3)
        capacity = measure(stack.nginx.port, token, PATH, 16, 2, 15)["rps"]
        high, low = capacity * args.factor, capacity * 0.5
        print(f"# capacity (closed loop, 16 in flight): {capacity:.0f} req/s; open loop at {high:.0f} req/s for "
              f"{args.overload_time:.0f} s, then {low:.0f} req/s for {args.recovery_time:.0f} s", flush=True)
        schedule = [i / high for i in range(int(high * args.overload_time))]
        schedule += [args.overload_time + i / low for i in range(int(low * args.recovery_time))]
        t0 = time.time() + 1.0  # wall clock: the same instant in every generator process
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # one socket per request in flight
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        queue = multiprocessing.Queue()
        workers = [multiprocessing.Process(target=open_loop, args=(stack.nginx.port, token, schedule[n::args.processes],
                                                                   t0, queue))
                   for n in range(args.processes)]
        for worker in workers:
            worker.start()
        results = [row for _ in workers for row in queue.get()]
        for worker in workers:
            worker.join()

    drop = args.overload_time
    print("\n| second | sent | served | shed (503) | other failures | served p95 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    by_second: dict[int, list] = {}
    for offset, latency, status in results:
        by_second.setdefault(int(offset), []).append((latency, status))
    for second in sorted(by_second):
        rows = by_second[second]
        served = [lat for lat, status in rows if status == 200]
        print(f"| {second} | {len(rows)} | {len(served)} | {sum(1 for _, s in rows if s == 503)} | "
              f"{sum(1 for _, s in rows if s not in (200, 503))} | {pct(served, 95) * 1000:.0f} |")
    during = [(lat, s) for off, lat, s in results if off < drop]
    served = [lat for lat, s in during if s == 200]
    shed = [lat for lat, s in during if s == 503]
    recovered_at = None
    for start in range(int(drop), int(drop + args.recovery_time) - 4):
        window = [(lat, s) for off, lat, s in results if start <= off < start + 5]
        if all(s == 200 for _, s in window) and pct([lat for lat, _ in window], 95) < 1.0:
            recovered_at = start - drop
            break
    print(f"\nduring overload ({high:.0f} req/s offered, {args.factor:g}x capacity): served {len(served)}, "
          f"p95 {pct(served, 95) * 1000:.0f} ms, max {max(served, default=0) * 1000:.0f} ms; shed {len(shed)} "
          f"({len(shed) / max(1, len(during)):.1%}), p95 of a 503 {pct(shed, 95) * 1000:.0f} ms; "
          f"other failures {sum(1 for _, s in during if s not in (200, 503))}")
    print(f"longest answer of any kind: {max(lat for _, lat, _ in results) * 1000:.0f} ms")
    print("after the drop: " + (f"the SLA held again from {recovered_at:.0f} s on" if recovered_at is not None
                                else "the SLA did not hold again within the recovery time"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
