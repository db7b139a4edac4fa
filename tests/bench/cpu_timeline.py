"""CPU of every part of the stack, window by window, while a benchmark runs beside it.

    .venv/bin/python tests/bench/cpu_timeline.py --duration 600 --window 5 > timeline.md &
    .venv/bin/python tests/bench/capacity.py --steps 1000 --spawn-rate 5 --step-time 60

Every second it reads the CPU time of each process on the machine (psutil) and adds what it used
since the last second to its group: each gunicorn worker apart (`gunicorn[pid]`), the gunicorn
masters, PostgreSQL's backends and its background processes by kind, daphne, nginx, Redis, the load
generator (Locust), Prometheus and its exporters. Every `--window` seconds it prints one Markdown row:
cores used per group and the machine's busy cores, so a burst of errors in a load test can be read
against what took the CPU in the same seconds. A process that lives less than a second is missed.
A benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import psutil


def group_of(process: psutil.Process) -> str | None:
    try:
        name, cmdline = process.name(), " ".join(process.cmdline())
        parent = process.parent()
        parent_cmdline = " ".join(parent.cmdline()) if parent else ""
    except psutil.Error:
        return None
    if cmdline.startswith("postgres:"):
        kind = cmdline.removeprefix("postgres:").split()
        background = {"checkpointer", "background", "walwriter", "autovacuum", "logical", "stats", "archiver"}
        return f"pg {kind[0]}" if kind and kind[0] in background else "pg backends"
    if name in ("postgres", "postmaster"):
        return "pg postmaster"
    if "gunicorn" in cmdline:
        # a worker's parent is the master, which runs gunicorn too
        return f"gunicorn[{process.pid}]" if "gunicorn" in parent_cmdline else "gunicorn master"
    for needle, group in (("daphne", "daphne"), ("nginx", "nginx"), ("redis", "redis"), ("locust", "load generator"),
                          ("workorder-loadtest", "load generator"), ("exporter", "exporters"),
                          ("prometheus", "prometheus")):
        if needle in cmdline or needle in name:
            return group
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds to watch")
    parser.add_argument("--window", type=int, default=5, help="seconds per printed row")
    args = parser.parse_args()

    seen: dict[int, tuple[float, str | None]] = {}
    window: collections.Counter = collections.Counter()
    columns: list[str] = []
    machine_start = psutil.cpu_times()
    started = window_start = time.monotonic()

    def busy(t) -> float:
        return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)

    while time.monotonic() - started < args.duration:
        for process in psutil.process_iter():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system
            before = seen.get(process.pid)
            group = before[1] if before else group_of(process)
            if before and group:
                window[group] += max(0.0, used - before[0])
            seen[process.pid] = (used, group)
        if time.monotonic() - window_start >= args.window:
            elapsed = time.monotonic() - window_start
            machine_end = psutil.cpu_times()
            new = sorted(g for g in window if g not in columns)
            if new or not columns:
                columns += new
                print("\n| time (UTC) | " + " | ".join(columns) + " | machine busy |")
                print("|---|" + "---:|" * (len(columns) + 1))
            cells = [f"{window[g] / elapsed:.2f}" for g in columns]
            machine = (busy(machine_end) - busy(machine_start)) / elapsed
            print(f"| {time.strftime('%H:%M:%S', time.gmtime())} | " + " | ".join(cells) + f" | {machine:.2f} |")
            sys.stdout.flush()
            window.clear()
            machine_start, window_start = machine_end, time.monotonic()
        time.sleep(1.0 - (time.monotonic() - started) % 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
