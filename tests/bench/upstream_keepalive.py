#!/usr/bin/env python
"""nginx -> gunicorn upstream keep-alive, before and after (a script, not a test).

    .venv/bin/python tests/bench/upstream_keepalive.py                  # defaults below
    .venv/bin/python tests/bench/upstream_keepalive.py --concurrency 16 --duration 20 --rounds 2

The production stack (tests/harness/stack.py: PostgreSQL, Redis, gunicorn, nginx rendered from
nix/deployment.nix) with `seed_loadtest --work-orders N`, then a closed-loop client (worker_class.py's)
through nginx, in two layouts, alternating per round:
- "keep-alive": the layout as shipped, the gunicorn locations restating `proxy_set_header Connection ""`
  so nginx reuses its pooled upstream connections;
- "Connection: close": the same layout without that line, which is what NixOS rendered before
  (recommendedProxySettings' per-location headers hide the http-level one).
Prints requests/s, latency and the server's CPU per request (gunicorn + nginx + PostgreSQL + Redis).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE))

from capacity import CpuSampler
from worker_class import measure

from harness.stack import Stack, StackOptions

KEEPALIVE_LINE = 'proxy_set_header Connection "";'


def without_upstream_keepalive(layout: dict) -> dict:
    layout = copy.deepcopy(layout)
    for location in layout["locations"].values():
        lines = location.get("extraConfig", "").splitlines()
        location["extraConfig"] = "\n".join(line for line in lines if line.strip() != KEEPALIVE_LINE)
    return layout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work-orders", type=int, default=2000)
    parser.add_argument("--path", default="/api/tasks/?page_size=20")
    args = parser.parse_args()

    options = StackOptions(work_orders=args.work_orders, operators=20, supervisors=5, makers=5, monitoring=False,
                           rate_limit="100000r/s", rate_burst=100000, nginx_access_log=False)
    variants = {"keep-alive": None, "Connection: close": without_upstream_keepalive}
    rows = []
    with Stack(options) as stack:
        token = stack.login("loadtest-supervisor-0001")
        for round_no in range(args.rounds):
            names = list(variants) if round_no % 2 == 0 else list(variants)[::-1]
            for name in names:
                stack.nginx.config.layout_transform = variants[name]
                stack.nginx.reload()
                time.sleep(1.0)
                measure(stack.nginx.port, token, args.path, args.concurrency, args.client_processes, args.warmup)
                sampler = CpuSampler(stack.server_pids()).start()
                result = measure(stack.nginx.port, token, args.path, args.concurrency, args.client_processes,
                                 args.duration)
                cpu = sampler.stop()
                result.update(variant=name, round=round_no + 1, cpu=cpu)
                result["cpu_ms_per_request"] = (cpu["server_cpu_cores"] * cpu["wall_s"] * 1000 / result["requests"]
                                                if result["requests"] else float("nan"))
                rows.append(result)
                print(f"# round {round_no + 1} {name}: {result['rps']:.1f} req/s, p95 {result['p95']:.0f} ms, "
                      f"{result['cpu_ms_per_request']:.1f} ms CPU/request, errors {result['errors']}", flush=True)

    print()
    print(f"GET {args.path} through nginx, {args.concurrency} requests in flight, {args.duration:.0f}s per run, "
          f"{args.work_orders} work orders, client on the same machine")
    print()
    print("| nginx -> gunicorn | round | requests/s | p50 ms | p95 ms | server CPU ms/request | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        for r in mine:
            print(f"| {name} | {r['round']} | {r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | "
                  f"{r['cpu_ms_per_request']:.1f} | {r['errors']} |")
        print(f"| **{name} mean** | | {statistics.fmean(r['rps'] for r in mine):.1f} | "
              f"{statistics.fmean(r['p50'] for r in mine):.0f} | {statistics.fmean(r['p95'] for r in mine):.0f} | "
              f"{statistics.fmean(r['cpu_ms_per_request'] for r in mine):.1f} | {sum(r['errors'] for r in mine)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
