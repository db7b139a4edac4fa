#!/usr/bin/env python
"""Login storm: hundreds of users logging in within seconds while the rest work (a script, not a test).

    .venv/bin/python tests/bench/login_storm.py                        # 500 working, 300 logins in 30 s
    .venv/bin/python tests/bench/login_storm.py --working 200 --logins 300 --storm-time 30

The production stack (tests/harness/stack.py, >= 100,000 tasks, nginx's per-address limit raised:
every simulated user comes from 127.0.0.1) with `workorder-loadtest` running --working users (the
suite's mix and think times). Once they are all started, --logins accounts log in through nginx at an
even pace over --storm-time seconds (accounts the load test does not use), while a probe of 10
clients keeps requesting the task list as a working user with a token would (one request per second
each). Prints the logins' latency (p50/p95/max) and statuses (any 429 or 503 is a failure of the goal),
the probe's latency before and during the storm, and the load test's own verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from harness.stack import Stack, StackOptions, venv_binary

PROBE_PATH = "/api/tasks/?page=1&page_size=20"


def request(url: str, body: dict | None = None, token: str | None = None, timeout: float = 30) -> tuple[int, float, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = json.dumps(body).encode() if body is not None else None
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as r:
            payload = json.loads(r.read() or b"{}")
            return r.status, time.perf_counter() - started, payload
    except urllib.error.HTTPError as exc:
        return exc.code, time.perf_counter() - started, {}
    except OSError:
        return 0, time.perf_counter() - started, {}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000 if values else float("nan")


class Probe:
    """10 clients, one task-list request per second each; latencies with their start times."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.samples: list[tuple[float, float, int]] = []
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(10)]

    def _run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            status, latency, _ = request(self.url + PROBE_PATH, token=self.token)
            self.samples.append((started, latency, status))
            self.stop_event.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def start(self) -> Probe:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(35)

    def window(self, t0: float, t1: float) -> list[tuple[float, int]]:
        return [(latency, status) for started, latency, status in self.samples if t0 <= started < t1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--working", type=int, default=500, help="load-test users working meanwhile")
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--storm-time", type=float, default=30.0)
    parser.add_argument("--spawn-rate", type=float, default=10.0)
    parser.add_argument("--work-orders", type=int, default=20000)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "reports" / "bench" / "login-storm")
    args = parser.parse_args()

    # The load test takes its accounts from the first of each pool; the storm logs in operators after them.
    operators = args.working + args.logins
    options = StackOptions(work_orders=args.work_orders, min_tasks=100000, operators=operators, supervisors=250,
                           makers=250, rate_limit="100000r/s", rate_burst=100000, nginx_access_log=False)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    ramp = args.working / args.spawn_rate
    run_time = int(ramp + 15 + args.storm_time + 30)
    with Stack(options) as stack:
        probe_token = stack.login("loadtest-supervisor-0250")
        loadtest = subprocess.Popen(
            [venv_binary("workorder-loadtest"), "--host", stack.url, "--users", str(args.working), "--spawn-rate",
             f"{args.spawn_rate:g}", "--run-time", f"{run_time}s", "--report-dir", str(args.out_dir),
             *stack.loadtest_account_args()],
            cwd=str(args.out_dir), env={**os.environ, **stack.loadtest_env()},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        probe = Probe(stack.url, probe_token).start()
        time.sleep(ramp + 15)  # everyone started and settled
        calm_start = time.monotonic() - 10
        storm_start = time.monotonic()
        accounts = [f"loadtest-operator-{n:04d}" for n in range(args.working + 1, operators + 1)]
        results: list[tuple[int, float]] = []

        def login(index: int) -> None:
            time.sleep(max(0.0, storm_start + index * args.storm_time / len(accounts) - time.monotonic()))
            status, latency, payload = request(stack.url + "/api/auth/login/",
                                               {"username": accounts[index], "password": stack.options.password})
            results.append((status if payload.get("token") or status != 200 else -1, latency))

        with ThreadPoolExecutor(max_workers=len(accounts)) as pool:
            list(pool.map(login, range(len(accounts))))
        storm_end = time.monotonic()
        time.sleep(5)
        probe.stop()
        output, _ = loadtest.communicate(timeout=run_time + 300)
        summary = stack.loadtest_summary(args.out_dir)

    latencies = [latency for status, latency in results if status == 200]
    statuses: dict[int, int] = {}
    for status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    calm = probe.window(calm_start, storm_start)
    storm = probe.window(storm_start, storm_end)
    print(f"\n{args.logins} logins in {storm_end - storm_start:.1f} s while {args.working} load-test users worked")
    print("\n| | requests | p50 ms | p95 ms | max ms | statuses |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| logins | {len(results)} | {pct(latencies, 50):.0f} | {pct(latencies, 95):.0f} | "
          f"{max(latencies, default=0) * 1000:.0f} | {statuses} |")
    for name, window in (("task list before the storm (probe)", calm), ("task list during the storm (probe)", storm)):
        lat = [latency for latency, status in window if status == 200]
        failed = sum(1 for _, status in window if status != 200)
        print(f"| {name} | {len(window)} | {pct(lat, 50):.0f} | {pct(lat, 95):.0f} | "
              f"{max(lat, default=0) * 1000:.0f} | {failed} failed |")
    http = (summary.get("groups") or {}).get("http") or {}
    print(f"\nload test ({args.working} users, whole run): exit {loadtest.returncode}, http requests "
          f"{http.get('requests')}, failures {http.get('failures')}, p95 {http.get('p95_ms')} ms")
    print(output[-1500:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
