#!/usr/bin/env python
"""What an Idempotency-Key costs a write: server CPU per POST update_progress with and without the
header, through the real stack (a script printing a table, not a test).

    .venv/bin/python tests/bench/idempotency_overhead.py                  # 2 rounds x 15 s per variant
    .venv/bin/python tests/bench/idempotency_overhead.py --duration 30 --rounds 3 --concurrency 8

The production stack (tests/harness/stack.py: PostgreSQL, Redis, gunicorn with the package's config,
nginx from nix/deployment.nix, seed_loadtest data). Each of --concurrency client threads (in two
processes, keep-alive connections, no think time) is one operator reporting 1 unit at a time on a
task of its own (planned quantity raised so it never fills up, earlier steps marked done), so
the loop measures the write path, not row-lock queues. The variants alternate round by round
(without, with, without, with, ...); with a key every request sends a fresh one (uuid4), so every
request stores an outcome (the replay path is cheaper: one lookup, no write). Server CPU comes from
capacity.py's CpuSampler over every server process tree (gunicorn, nginx, PostgreSQL, Redis).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE))

from capacity import CpuSampler

from harness.stack import Stack, StackOptions


def client_thread(port: int, token: str, task: int, keyed: bool, until: float, out: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"quantity": 1})
    path = f"/api/tasks/{task}/update_progress/"
    while time.monotonic() < until:
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json", "Host": "localhost"}
        if keyed:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        started = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            status = 0
        if status == 200:
            out.append(time.perf_counter() - started)
        else:
            errors.append(status)
    conn.close()


def client_process(port: int, pairs: list, keyed: bool, duration: float, queue) -> None:
    until = time.monotonic() + duration
    latencies: list[float] = []
    errors: list[int] = []
    threads = [threading.Thread(target=client_thread, args=(port, token, task, keyed, until, latencies, errors))
               for token, task in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((latencies, errors))


def closed_loop(port: int, pairs: list, keyed: bool, duration: float, processes: int = 2) -> dict:
    queue = multiprocessing.Queue()
    chunks = [pairs[i::processes] for i in range(processes) if pairs[i::processes]]
    procs = [multiprocessing.Process(target=client_process, args=(port, chunk, keyed, duration, queue))
             for chunk in chunks]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors: list[int] = []
    for _ in procs:
        lat, err = queue.get()
        latencies.extend(lat)
        errors += err
    for proc in procs:
        proc.join()
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "errors": len(errors), "error_statuses": dict(collections.Counter(errors)),
            "rps": len(latencies) / duration, "p50": pct(50),
            "p95": pct(95), "mean": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


def prepare_writers(stack: Stack, count: int) -> list[tuple[str, int]]:
    """(token, task) per writer: operator N gets an in-progress first-step task of its department."""
    pairs, orders = [], []
    for n in range(1, count + 1):
        username = f"loadtest-operator-{n:04d}"
        user_id, department = stack.psql(
            f"SELECT id, department_id FROM accounts_user WHERE username = '{username}'").split("|")
        # one work order per writer: another writer's task must not be an earlier step of this one
        exclude = f"AND t.work_order_id NOT IN ({','.join(orders)})" if orders else ""
        task, order = stack.psql(f"SELECT t.id, t.work_order_id FROM production_task t WHERE "
                                 f"t.assigned_department_id = {department} {exclude} ORDER BY t.id LIMIT 1").split("|")
        orders.append(order)
        stack.psql(f"UPDATE production_task SET status = 'in_progress', assigned_operator_id = {user_id}, "
                   f"planned_quantity = 1000000000, completed_quantity = 0, started_at = now() WHERE id = {task}")
        # earlier steps of its work order: done far beyond anything reported (no 409 "previous step")
        stack.psql("UPDATE production_task p SET planned_quantity = 1000000000, completed_quantity = 1000000000 "
                   f"FROM production_task t WHERE t.id = {task} AND p.work_order_id = t.work_order_id "
                   "AND p.sequence < t.sequence")
        pairs.append((stack.login(username), int(task)))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="without/with pairs, alternating (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="writers in flight, one task each (default 8)")
    parser.add_argument("--work-orders", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args()

    stack = Stack(StackOptions(work_orders=args.work_orders, monitoring=False, rate_limit="100000r/s",
                               rate_burst=100000, nginx_access_log=False))
    totals = {False: {"requests": 0, "errors": 0, "cpu_s": 0.0, "wall": 0.0, "p50": [], "p95": [], "split": {}},
              True: {"requests": 0, "errors": 0, "cpu_s": 0.0, "wall": 0.0, "p50": [], "p95": [], "split": {}}}
    try:
        stack.start()
        pairs = prepare_writers(stack, args.concurrency)
        port = stack.nginx.port
        closed_loop(port, pairs, False, args.warmup)
        closed_loop(port, pairs, True, args.warmup)
        for round_number in range(1, args.rounds + 1):
            for keyed in (False, True):
                sampler = CpuSampler(stack.server_pids()).start()
                result = closed_loop(port, pairs, keyed, args.duration)
                cpu = sampler.stop()
                t = totals[keyed]
                t["requests"] += result["requests"]
                t["errors"] += result["errors"]
                t["cpu_s"] += cpu["server_cpu_cores"] * cpu["wall_s"]
                t["wall"] += cpu["wall_s"]
                t["p50"].append(result["p50"])
                t["p95"].append(result["p95"])
                for group, cores in cpu["per_server_cores"].items():
                    t["split"][group] = t["split"].get(group, 0.0) + cores * cpu["wall_s"]
                print(f"# round {round_number} {'with' if keyed else 'without'} key: {result['rps']:.0f} req/s, "
                      f"{cpu['server_cpu_cores'] * cpu['wall_s'] * 1000 / max(1, result['requests']):.2f} ms server "
                      f"CPU/request, p95 {result['p95']:.0f} ms, errors {result['errors']} {result['error_statuses']}",
                      flush=True)
        stored = stack.psql("SELECT count(*) FROM core_idempotencykey").strip()
    finally:
        stack.stop()
        stack.cleanup()

    lines = [
        (f"POST /api/tasks/{{id}}/update_progress/ (1 unit), closed loop of {args.concurrency} writers through nginx, "
         f"{args.rounds} x {args.duration:.0f} s per variant, alternating; {args.work_orders} work orders; client on "
         f"the same machine ({os.cpu_count()} cores). Keyed outcomes stored: {stored}."), "",
        ("| variant | requests | requests/s | p50 ms | p95 ms | errors | server CPU ms/request "
         "| of which gunicorn / PostgreSQL / nginx / Redis |"),
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    per_request = {}
    for keyed in (False, True):
        t = totals[keyed]
        n = max(1, t["requests"])
        per_request[keyed] = t["cpu_s"] * 1000 / n
        split = " / ".join(f"{t['split'].get(k, 0.0) * 1000 / n:.2f}" for k in ("gunicorn", "postgresql", "nginx", "redis"))
        lines.append(f"| {'with Idempotency-Key' if keyed else 'without key'} | {t['requests']} | "
                     f"{t['requests'] / max(t['wall'], 1e-9):.0f} | {statistics.median(t['p50']):.1f} | "
                     f"{statistics.median(t['p95']):.1f} | {t['errors']} | {per_request[keyed]:.2f} | {split} |")
    change = per_request[True] - per_request[False]
    if per_request[False]:
        lines += ["", f"A key adds {change:+.2f} ms of server CPU per write ({100 * change / per_request[False]:+.1f} %)."]
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
