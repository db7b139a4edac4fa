#!/usr/bin/env python
"""gunicorn worker class benchmark (a script, not a test): sync vs gthread (2 and 4 threads) on GET /api/tasks/.

    .venv/bin/python tests/bench/worker_class.py                     # defaults below
    .venv/bin/python tests/bench/worker_class.py --concurrency 16 --duration 20 --rounds 2

Same machine, same run, same database: a throwaway PostgreSQL + Redis, `seed_loadtest` with
--work-orders N, then gunicorn with the package's config (python:workorder.gunicorn_conf) and
GUNICORN_WORKER_CLASS=sync or gthread with GUNICORN_THREADS=N (same GUNICORN_WORKERS, default
the package's, CPUs + 1), alternating the order per round so drift on a shared machine hits both. A closed-loop client (processes x threads, no think
time) holds a fixed number of requests in flight, authenticated as a load-test supervisor, each on a
persistent connection where the server allows it (what nginx's upstream keepalive pool does; sync
workers close after every response, so those clients reconnect). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from harness.app import GunicornServer
from harness.services import PostgresServer, RedisServer, free_port
from workorder.core.env import default_gunicorn_workers

BIN = Path(sys.executable).parent
PASSWORD = "bench-password-123"
SECRET = "worker-class-benchmark-" + "x7Qz-Lm2P-8vRt-Wn4J-" * 3


def client_process(port: int, token: str, path: str, threads: int, duration: float, queue) -> None:
    import threading

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def loop():
        conn = None
        local: list[float] = []
        local_errors = 0
        while time.monotonic() < stop_at:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers={"Authorization": f"Token {token}", "Host": "127.0.0.1"})
                response = conn.getresponse()
                response.read()
                elapsed = time.perf_counter() - started
                if response.status == 200:
                    local.append(elapsed)
                else:
                    local_errors += 1
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                local_errors += 1
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(local)
            errors[0] += local_errors

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put((latencies, errors[0]))


def measure(port: int, token: str, path: str, concurrency: int, processes: int, duration: float) -> dict:
    queue = multiprocessing.Queue()
    per_process = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    procs = [multiprocessing.Process(target=client_process, args=(port, token, path, n, duration, queue))
             for n in per_process if n]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        lat, err = queue.get()
        latencies.extend(lat)
        errors += err
    for proc in procs:
        proc.join()
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / duration,
            "p50": pct(50), "p95": pct(95), "p99": pct(99),
            "mean": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="sync+gthread pairs, alternating (default 2)")
    parser.add_argument("--workers", type=int, default=default_gunicorn_workers())
    parser.add_argument("--variants", default="sync,gthread:2,gthread:4",
                        help="worker classes to compare, gthread:N = N threads per worker (default %(default)s)")
    parser.add_argument("--work-orders", type=int, default=2000)
    parser.add_argument("--path", default="/api/tasks/?page_size=20")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="wo-bench-workers-"))
    postgres = PostgresServer().start()  # its own temp dir (owned by `postgres` when we are root)
    redis = RedisServer(str(base / "redis")).start()
    try:
        url = postgres.create_database("bench")
        env = {"PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(base), "LANG": "C.UTF-8",
               "DJANGO_SECRET_KEY": SECRET, "DATABASE_URL": url, "REDIS_URL": redis.url(),
               "ALLOWED_HOSTS": "127.0.0.1,localhost", "WORKORDER_STATE_DIR": str(base / "state"),
               "LOG_LEVEL": "WARNING"}
        import subprocess

        def manage(*a):
            subprocess.run([str(BIN / "workorder-manage"), *a], env=env, check=True, capture_output=True, text=True)

        t0 = time.monotonic()
        manage("migrate", "--noinput")
        manage("seed_loadtest", "--operators", "20", "--supervisors", "5", "--makers", "5", "--password", PASSWORD,
               "--work-orders", str(args.work_orders), "--force")
        postgres.psql("ANALYZE", dbname="bench")
        print(f"# setup (migrate + seed {args.work_orders} work orders): {time.monotonic() - t0:.0f}s", flush=True)

        rows = []
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        for round_no in range(args.rounds):
            for variant in variants if round_no % 2 == 0 else variants[::-1]:
                worker_class, _, threads = variant.partition(":")
                port = free_port()
                server = GunicornServer(env, base / f"g-{worker_class}{threads}-{round_no}", port=port,
                                        workers=args.workers, worker_class=worker_class,
                                        threads=int(threads) if threads else None)
                with server:
                    status, _, body = server.request("POST", "/api/auth/login/",
                                                     body={"username": "loadtest-supervisor-0001",
                                                           "password": PASSWORD})
                    assert status == 200, body
                    token = json.loads(body)["token"]
                    measure(port, token, args.path, args.concurrency, args.client_processes, args.warmup)
                    result = measure(port, token, args.path, args.concurrency, args.client_processes, args.duration)
                result.update(worker_class=variant, round=round_no + 1)
                rows.append(result)
                print(f"# round {round_no + 1} {variant}: {result['rps']:.1f} req/s p95 {result['p95']:.0f} ms "
                      f"errors {result['errors']}", flush=True)

        print()
        print(f"GET {args.path}, {args.concurrency} requests in flight, {args.duration:.0f}s per run, "
              f"GUNICORN_WORKERS={args.workers} (gthread:N = GUNICORN_THREADS=N), "
              f"{len(os.sched_getaffinity(0))} CPUs shared with the client, {args.work_orders} work orders")
        print()
        print("| worker class | round | requests/s | p50 ms | p95 ms | p99 ms | errors |")
        print("|---|---|---|---|---|---|---|")
        rows.sort(key=lambda r: (variants.index(r["worker_class"]), r["round"]))
        for r in rows:
            print(f"| {r['worker_class']} | {r['round']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | "
                  f"{r['p99']:.0f} | {r['errors']} |")
        for worker_class in variants:
            mine = [r for r in rows if r["worker_class"] == worker_class]
            print(f"| **{worker_class} mean** | | {statistics.fmean(r['rps'] for r in mine):.1f} | "
                  f"{statistics.fmean(r['p50'] for r in mine):.0f} | {statistics.fmean(r['p95'] for r in mine):.0f} | "
                  f"{statistics.fmean(r['p99'] for r in mine):.0f} | {sum(r['errors'] for r in mine)} |")
    finally:
        redis.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
