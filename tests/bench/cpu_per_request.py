#!/usr/bin/env python
"""Server CPU per request, one endpoint at a time, through the real stack (a script, not a test).

    .venv/bin/python tests/bench/cpu_per_request.py                      # every endpoint, 15 s each
    .venv/bin/python tests/bench/cpu_per_request.py --duration 30 --only tasks-supervisor,floor
    .venv/bin/python tests/bench/cpu_per_request.py --profile           # + a CPU profile per endpoint

The production stack (tests/harness/stack.py: PostgreSQL, Redis, gunicorn with the package's config,
nginx rendered from nix/deployment.nix, seed_loadtest data) plus capacity.py's framework floor (a
trivial Django view on a second gunicorn at /floor/). For each endpoint, a closed loop of
--concurrency requests in flight (no think time, keep-alive connections, clients in separate
processes) runs for --duration seconds while the CPU of every server process tree (gunicorn,
nginx, PostgreSQL, Redis; daphne idles) is sampled. The table gives per endpoint:

- requests/s and latency percentiles of the closed loop, and requests/s as a share of the floor's;
- **server CPU ms per request** = server CPU seconds / completed requests (what the machine spends);
- in-process ms per request and SQL queries per request: the same request through Django's test
  client in one process (no nginx, no gunicorn, no concurrency), the view a profiler of one request sees.

`--profile` samples the gunicorn workers with py-spy (`pip install py-spy`; `--gil`: only the thread
holding the GIL is sampled, so waits on PostgreSQL, Redis and sockets are not counted) during a second run of each endpoint and prints the
functions with the most CPU (self and inclusive, project code and libraries).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE))

from capacity import CpuSampler, start_floor, with_floor
from worker_class import measure

from harness.stack import Stack, StackOptions

# name -> (account, path); `{task}` is a task the operator may see.
ENDPOINTS = {
    "floor": (None, "/floor/"),
    "me": ("operator", "/api/auth/me/"),
    "tasks-supervisor": ("supervisor", "/api/tasks/?page=1&page_size=20"),
    "workorders-supervisor": ("supervisor", "/api/workorders/?page=1&page_size=20"),
    "tasks-operator": ("operator", "/api/tasks/?page=1&page_size=20"),
    "task-detail": ("operator", "/api/tasks/{task}/"),
    "notifications": ("operator", "/api/notifications/?page=1"),
    "task-summary": ("supervisor", "/api/statistics/task_summary/"),
    "department-workload": ("supervisor", "/api/statistics/department_workload/"),
}
ACCOUNTS = {"operator": "loadtest-operator-0001", "supervisor": "loadtest-supervisor-0001"}

IN_PROCESS = r"""
import json, sys, time
import django
django.setup()
from django.db import connection
from django.test import Client
executed = []
def count(execute, sql, params, many, context):
    executed.append(sql)
    return execute(sql, params, many, context)
spec = json.load(sys.stdin)
out = {}
for name, (token, path) in spec["endpoints"].items():
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {token}" if token else "")
    for _ in range(3):
        client.get(path)
    executed.clear()
    with connection.execute_wrapper(count):
        client.get(path)
    started = time.process_time()
    wall = time.perf_counter()
    for _ in range(spec["repeat"]):
        status = client.get(path).status_code
    out[name] = {"cpu_ms": (time.process_time() - started) * 1000 / spec["repeat"],
                 "wall_ms": (time.perf_counter() - wall) * 1000 / spec["repeat"],
                 "queries": len(executed), "status": status}
json.dump(out, sys.stdout)
"""


def in_process(stack: Stack, endpoints: dict[str, tuple[str | None, str]], repeat: int) -> dict:
    """Per endpoint: CPU and wall ms per request and SQL queries, through Django's test client."""
    spec = {"endpoints": {name: (token, path) for name, (token, path) in endpoints.items()
                          if not path.startswith("/floor/")}, "repeat": repeat}
    result = subprocess.run([sys.executable, "-c", IN_PROCESS], input=json.dumps(spec), env=stack.app_env(),
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"in-process measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def gunicorn_worker_pids(stack: Stack) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(stack.gunicorn.pid).children()]


def profile(stack: Stack, token: str | None, path: str, concurrency: int, duration: float, top: int) -> str:
    """py-spy on every gunicorn worker during a closed loop; the top functions by CPU samples."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir = stack.run_dir / "profiles"
    out_dir.mkdir(exist_ok=True)
    recorders = []
    for pid in gunicorn_worker_pids(stack):
        raw = out_dir / f"{pid}.txt"
        recorders.append((raw, subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw), "--rate", "250",
             "--duration", str(int(duration)), "--nonblocking", "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.0)
    measure(stack.nginx.port, token or "", path, concurrency, 2, duration)
    self_samples: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for raw, recorder in recorders:
        recorder.wait(timeout=duration + 60)
        if not raw.exists():
            continue
        for line in raw.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            if not stack_text or not count.isdigit():
                continue
            frames = [_short(frame) for frame in stack_text.split(";")]
            total += int(count)
            self_samples[frames[-1]] += int(count)
            for frame in set(frames):
                inclusive[frame] += int(count)
    if not total:
        return "(no samples: is py-spy installed and may it ptrace the workers?)"
    lines = [f"{total} samples of busy worker threads", "", "| self % | function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{frame}` |" for frame, n in self_samples.most_common(top)]
    ours = [(frame, n) for frame, n in inclusive.most_common() if "workorder/" in frame][:top]
    lines += ["", "| inclusive % | project function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{frame}` |" for frame, n in ours]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'get (rest_framework/generics.py:42)' with site-packages and the repository prefix cut."""
    for marker in ("site-packages/", "backend/", "lib/python3"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            tail = tail.split(marker, 1)[-1]
            return f"{head.strip()} ({tail}"
    return frame


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per endpoint")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--work-orders", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=50, help="in-process requests per endpoint")
    parser.add_argument("--only", default="", help="comma list of endpoint names (default: all)")
    parser.add_argument("--profile", action="store_true", help="py-spy CPU profile per endpoint")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--workers", type=int, help="GUNICORN_WORKERS (default: the package's, CPUs + 1)")
    parser.add_argument("--threads", type=int, help="GUNICORN_THREADS (default: the package's)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(ENDPOINTS)
    unknown = set(names) - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown endpoints: {', '.join(sorted(unknown))} (known: {', '.join(ENDPOINTS)})")
    if "floor" not in names:
        names.insert(0, "floor")  # the ratio column needs it

    options = StackOptions(work_orders=args.work_orders, monitoring=False, rate_limit="100000r/s",
                           rate_burst=100000, nginx_access_log=False, gunicorn_workers=args.workers,
                           gunicorn_extra_env={"GUNICORN_THREADS": str(args.threads)} if args.threads else {})
    stack = Stack(options)
    with_floor(stack)
    rows, profiles = [], {}
    try:
        stack.start()
        start_floor(stack)
        tokens = {role: stack.login(username) for role, username in ACCOUNTS.items()}
        task = stack.psql(
            "SELECT t.id FROM production_task t JOIN accounts_user u ON u.username = 'loadtest-operator-0001' "
            "WHERE t.assigned_department_id = u.department_id ORDER BY t.id LIMIT 1").strip()
        endpoints = {name: (tokens.get(ENDPOINTS[name][0]), ENDPOINTS[name][1].format(task=task)) for name in names}
        inproc = in_process(stack, endpoints, args.repeat)
        for name, (token, path) in endpoints.items():
            measure(stack.nginx.port, token or "", path, args.concurrency, 2, args.warmup)
            sampler = CpuSampler(stack.server_pids()).start()
            result = measure(stack.nginx.port, token or "", path, args.concurrency, 2, args.duration)
            cpu = sampler.stop()
            server_cpu_s = cpu["server_cpu_cores"] * cpu["wall_s"]
            row = {"name": name, "path": path, **result, **cpu,
                   "cpu_ms": server_cpu_s * 1000 / result["requests"] if result["requests"] else float("nan"),
                   **{f"inproc_{k}": v for k, v in inproc.get(name, {}).items()}}
            rows.append(row)
            print(f"# {name}: {row['rps']:.0f} req/s, {row['cpu_ms']:.2f} ms server CPU/request, "
                  f"p95 {row['p95']:.0f} ms, errors {row['errors']}", flush=True)
            if args.profile and name != "floor":
                profiles[name] = profile(stack, token, path, args.concurrency, args.duration, args.top)
    finally:
        stack.stop()
        stack.cleanup()

    floor_rps = next(r["rps"] for r in rows if r["name"] == "floor")
    lines = [
        (f"Closed loop, {args.concurrency} requests in flight, {args.duration:.0f} s per endpoint through nginx, "
         f"{args.work_orders} work orders; client on the same machine ({os.cpu_count()} cores); gunicorn "
         f"workers {args.workers or 'default'}, threads {args.threads or 'default'}."), "",
        ("| endpoint | requests/s | share of floor | p50 ms | p95 ms | p99 ms | errors | server CPU ms/request "
         "| gunicorn / PostgreSQL / nginx / Redis cores | in-process ms (CPU) | SQL queries |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        per = r["per_server_cores"]
        split = " / ".join(f"{per.get(k, 0):.2f}" for k in ("gunicorn", "postgresql", "nginx", "redis"))
        if r["name"] == "floor":
            split = f"{per.get('floor', 0):.2f} (floor gunicorn) / - / {per.get('nginx', 0):.2f} / -"
        inproc = (f"{r['inproc_wall_ms']:.1f} ({r['inproc_cpu_ms']:.1f})" if "inproc_wall_ms" in r else "-")
        if r.get("inproc_status", 200) != 200:
            inproc += f" HTTP {r['inproc_status']}"
        lines.append(f"| {r['name']} `{r['path']}` | {r['rps']:.0f} | 1/{floor_rps / r['rps']:.1f} | {r['p50']:.0f} | "
                     f"{r['p95']:.0f} | {r['p99']:.0f} | {r['errors']} | {r['cpu_ms']:.2f} | {split} | {inproc} | "
                     f"{r.get('inproc_queries', '-')} |")
    for name, text in profiles.items():
        lines += ["", f"### CPU profile: {name}", "", text]
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
