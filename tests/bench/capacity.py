#!/usr/bin/env python
"""Capacity benchmark (a script, not a test): how many users the production stack holds under the SLA.

    .venv/bin/python tests/bench/capacity.py                       # 100, 200, 400, 800, 1600, ... users
    .venv/bin/python tests/bench/capacity.py --steps 100,200 --step-time 60 --work-orders 20000
    .venv/bin/python tests/bench/capacity.py --steps 700 --seconds   # + each step's calm and slow seconds

Same stack as the production-stack test (tests/harness/stack.py: PostgreSQL with fsync on, Redis,
gunicorn with the package's config, daphne, nginx with the NixOS module's layout, >= 20,000 seeded
work orders / 100,000 tasks), plus, for the framework floor only, a second gunicorn (same config)
serving tests/bench/floor_app.py at /floor/ through the same nginx. Steps:

1. login cost: password hashing (Argon2id) in-process and POST /api/auth/login/ through nginx (reported apart;
   Locust users log in once in on_start, so this cost lands in the ramp-up, not in steady state);
2. framework floor: closed-loop users (no think time) on /floor/ and on /api/tasks/ (same
   concurrency, same nginx + gunicorn), so the API reads as a ratio of what the framework can do;
3. `workorder-loadtest` (the SLA gate, the suite's realistic user mix and think times) at 100 users,
   then doubling until the SLA breaks or the load generator is saturated (an invalid run).

Prints a Markdown table and writes it with the raw figures to --out-dir (default reports/bench/).
The nginx rate limit is raised for the benchmark: every simulated user shares 127.0.0.1, while in
production the limit (10 r/s burst 20 per client address) applies to each real client separately.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

import psutil

from harness.process import ManagedProcess
from harness.progress import Ticker, locust_progress
from harness.stack import Stack, StackOptions, venv_binary

PROGRESS_SECONDS = 10  # one progress line per running Locust every ~10 s
FLOOR_UPSTREAM = """
  upstream workorder-floor {{
    server unix:{socket};
    keepalive 32;
    keepalive_timeout 60s;
  }}
"""
FLOOR_LOCATION = """
    # Benchmark only: the framework floor (tests/bench/floor_app.py). Not in the NixOS module.
    location /floor/ {
      proxy_pass http://workorder-floor;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
"""


def with_floor(stack: Stack) -> None:
    """Route /floor/ in the stack's nginx to a second gunicorn (start it with start_floor)."""
    stack.options.nginx_extra_locations = FLOOR_LOCATION
    stack.options.nginx_extra_upstreams = FLOOR_UPSTREAM.format(socket=stack.run_dir / "floor.sock")


def start_floor(stack: Stack) -> None:
    """The framework floor's gunicorn (same config as the app's) on the socket with_floor routed to."""
    floor = ManagedProcess(
        "floor", [venv_binary("gunicorn"), "-c", "python:workorder.gunicorn_conf", "floor_app:application"],
        env={**stack.gunicorn_env(), "GUNICORN_BIND": f"unix:{stack.run_dir / 'floor.sock'}",
             "DJANGO_SETTINGS_MODULE": "floor_app", "PYTHONPATH": str(HERE),
             "PROMETHEUS_MULTIPROC_DIR": str(stack.run_dir / "floor-multiproc")},
        cwd=str(HERE), log_path=stack.logs / "floor-gunicorn.log")
    (stack.run_dir / "floor-multiproc").mkdir(exist_ok=True)
    stack.extra_processes.append(floor.start())
    floor.wait_until(lambda: stack.get("/floor/")[0] == 200, 60, "serving /floor/")


# -- CPU accounting ---------------------------------------------------------------------------
class CpuSampler:
    """CPU seconds used by process trees (roots + all descendants) between start() and stop().

    Polls every `interval` seconds so that workers recycled mid-run (max_requests) are counted up
    to their last sample; processes born during the run count from zero."""

    def __init__(self, roots: dict[str, list[int]], interval: float = 1.0):
        self.roots = roots
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.group_of: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.machine_start = None
        self.wall = 0.0
        # (wall clock, {group: CPU seconds since start()}, machine idle seconds since boot,
        #  {gunicorn process: its CPU seconds so far}), per sample
        self.timeline: list[tuple[float, dict[str, float], float, dict[int, float]]] = []

    def _sample(self, initial: bool) -> None:
        for group, pids in self.roots.items():
            for root in pids:
                try:
                    proc = psutil.Process(root)
                    procs = [proc, *proc.children(recursive=True)]
                except psutil.Error:
                    continue
                for p in procs:
                    try:
                        t = p.cpu_times()
                    except psutil.Error:
                        continue
                    used = t.user + t.system
                    if p.pid not in self.first:
                        self.first[p.pid] = used if initial else 0.0
                        self.group_of[p.pid] = group
                    self.last[p.pid] = used
        used_by: dict[str, float] = {}
        for pid, last in self.last.items():
            used_by[self.group_of[pid]] = used_by.get(self.group_of[pid], 0.0) + max(0.0, last - self.first[pid])
        gunicorn = {pid: last for pid, last in self.last.items() if self.group_of[pid] == "gunicorn"}
        self.timeline.append((time.time(), used_by, psutil.cpu_times().idle, gunicorn))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(initial=False)

    def start(self) -> CpuSampler:
        self._sample(initial=True)
        self.machine_start = psutil.cpu_times()
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._sample(initial=False)
        self.wall = time.monotonic() - self.t0
        end = psutil.cpu_times()
        busy = lambda t: t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0)
        machine_busy = busy(end) - busy(self.machine_start)
        per_group = self.timeline[-1][1]  # the final sample's totals
        server = sum(per_group.values())
        return {
            "wall_s": round(self.wall, 1),
            "server_cpu_cores": round(server / self.wall, 2) if self.wall else 0.0,
            "machine_busy_cores": round(machine_busy / self.wall, 2) if self.wall else 0.0,
            "cores": psutil.cpu_count(),
            "per_server_cores": {k: round(v / self.wall, 2) for k, v in sorted(per_group.items())},
        }

    def intervals(self) -> list[tuple[float, float, dict[str, float], float, float]]:
        """(start, end, {group: CPU seconds}, machine idle seconds, the CPU seconds of the busiest gunicorn
        process) between consecutive samples."""
        return [(t0, t1, {g: used1[g] - used0.get(g, 0.0) for g in used1}, idle1 - idle0,
                 max((cpu - worker0[pid] for pid, cpu in worker1.items() if pid in worker0), default=0.0))
                for (t0, used0, idle0, worker0), (t1, used1, idle1, worker1)
                in zip(self.timeline, self.timeline[1:], strict=False)]


# -- reading Locust results -------------------------------------------------------------------
def percentile_from_histogram(histogram: dict, p: float) -> float:
    """Locust's bucketed histogram {ms: count} -> the value at rank ceil(n*p) (nearest rank)."""
    items = sorted((float(k), int(v)) for k, v in histogram.items())
    n = sum(c for _, c in items)
    if not n:
        return 0.0
    rank = max(1, int(-(-n * p // 1)))
    seen = 0
    for value, count in items:
        seen += count
        if seen >= rank:
            return value
    return items[-1][0]


def locust_json_stats(path: Path, duration: float) -> dict:
    entries = json.loads(path.read_text())
    n = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    total_time = sum(e["total_response_time"] for e in entries)
    histogram: dict = {}
    for e in entries:
        for k, v in e["response_times"].items():
            histogram[k] = histogram.get(k, 0) + v
    return {
        "requests": n, "failures": failures, "rps": round(n / duration, 1) if duration else 0.0,
        "avg_ms": round(total_time / n, 1) if n else 0.0,
        "p50_ms": percentile_from_histogram(histogram, 0.50), "p95_ms": percentile_from_histogram(histogram, 0.95),
        "p99_ms": percentile_from_histogram(histogram, 0.99),
        "error_rate": failures / n if n else 0.0,
    }


def loadtest_figures(report_dir: Path, stack: Stack) -> dict:
    """HTTP-only figures of a workorder-loadtest run: its JSON summary, else Locust's CSV."""
    summary = stack.loadtest_summary(report_dir)
    figures = extract_summary_figures(summary)
    if figures:
        figures["source"] = "summary json"
        return figures
    stats = sorted(report_dir.glob("*_stats.csv"))
    if stats:
        with open(stats[0]) as fh:
            rows = list(csv.DictReader(fh))
        agg = next((r for r in rows if r.get("Name") == "Aggregated"), None)
        if agg:
            n = int(agg["Request Count"])
            return {"requests": n, "failures": int(agg["Failure Count"]), "rps": float(agg["Requests/s"]),
                    "avg_ms": float(agg["Average Response Time"]), "p50_ms": float(agg["50%"]),
                    "p95_ms": float(agg["95%"]), "p99_ms": float(agg["99%"]),
                    "error_rate": int(agg["Failure Count"]) / n if n else 0.0, "source": "locust csv (all entries)"}
    return {}


def extract_summary_figures(summary: dict) -> dict:
    """The HTTP aggregate of workorder-loadtest's summary.json (exact percentiles; logins and
    WebSocket entries are separate groups there), with requests/s over the run's wall time."""
    http = (summary.get("groups") or {}).get("http")
    if not http:
        return {}
    run = summary.get("run") or {}
    duration = 0.0
    try:
        duration = (datetime.fromisoformat(run["ended_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        pass
    n = int(http.get("requests") or 0)
    login = (summary.get("groups") or {}).get("login") or {}
    ws = (summary.get("groups") or {}).get("ws") or {}
    return {
        "requests": n, "failures": int(http.get("failures") or 0),
        "rps": round(n / duration, 1) if duration else 0.0,
        "avg_ms": float(http.get("avg_ms") or 0), "p50_ms": float(http.get("p50_ms") or 0),
        "p95_ms": float(http.get("p95_ms") or 0), "p99_ms": float(http.get("p99_ms") or 0),
        "error_rate": float(http.get("error_rate") or 0),
        "login_avg_ms": login.get("avg_ms"), "login_p95_ms": login.get("p95_ms"), "logins": login.get("requests"),
        "ws_p95_ms": ws.get("p95_ms"), "ws_failures": ws.get("failures"),
        "invalid_reasons": summary.get("invalid_reasons"), "cpu_warning": summary.get("cpu_warning"),
    }


# -- the steps --------------------------------------------------------------------------------
def measure_login_cost(stack: Stack, samples: int) -> dict:
    code = ("import time,django;django.setup();from django.contrib.auth.hashers import make_password,"
            "check_password,get_hasher;h=get_hasher();p=make_password('x');ts=[]\n"
            f"for _ in range({samples}):\n t=time.perf_counter();check_password('x',p);ts.append(time.perf_counter()-t)\n"
            "params=','.join(f'{k}={v}' for k,v in h.safe_summary(p).items() if k not in ('algorithm','salt','hash'))\n"
            "print(h.algorithm,params.replace(' ',''),sum(ts)/len(ts))")
    out = subprocess.run([sys.executable, "-c", code], env=stack.app_env(), capture_output=True, text=True,
                         check=True).stdout.split()
    http_times = []
    for i in range(samples):
        t0 = time.perf_counter()
        stack.login(f"loadtest-operator-{i + 1:04d}")
        http_times.append(time.perf_counter() - t0)
    return {"hasher": out[0], "parameters": out[1], "check_password_ms": round(float(out[2]) * 1000, 1),
            "login_http_ms": round(statistics.mean(http_times) * 1000, 1), "samples": samples}


def run_saturation(stack: Stack, user_class: str, users: int, run_time: int, out_dir: Path, env: dict) -> dict:
    prefix = out_dir / f"saturation-{user_class}"
    argv = [venv_binary("locust"), "-f", str(HERE / "saturation_locustfile.py"), user_class, "--headless",
            "--host", stack.url, "-u", str(users), "-r", str(users), "-t", f"{run_time}s", "--only-summary",
            "--json-file", str(prefix), "--csv", str(prefix), "--stop-timeout", "5"]
    history = Path(f"{prefix}_stats_history.csv")
    history.unlink(missing_ok=True)
    sampler = CpuSampler(stack.server_pids()).start()
    t0 = time.monotonic()
    with Ticker(PROGRESS_SECONDS, locust_progress(history), prefix=f"[capacity] {user_class}"):
        subprocess.run(argv, capture_output=True, text=True, timeout=run_time + 120, env={**os.environ, **env})
    duration = time.monotonic() - t0
    cpu = sampler.stop()
    figures = locust_json_stats(Path(f"{prefix}.json"), max(1.0, duration - 1.0))
    return {**figures, **cpu, "users": users}


def run_step(stack: Stack, users: int, measured_s: int, out_dir: Path, spawn_rate: float,
             settle_s: float = 0.0) -> dict:
    """One workorder-loadtest run: ramp-up at spawn_rate, `settle_s` seconds for the last users' logins,
    then `measured_s` seconds of steady state (--reset-stats --settle-time drop the ramp-up, whose
    logins are reported apart)."""
    report_dir = out_dir / f"users-{users}"
    report_dir.mkdir(parents=True, exist_ok=True)
    run_time = f"{int(users / spawn_rate + settle_s + 0.999) + measured_s}s"
    argv = [venv_binary("workorder-loadtest"), "--host", stack.url, "--users", str(users), "--spawn-rate",
            f"{spawn_rate:g}", "--run-time", run_time, "--report-dir", str(report_dir), "--reset-stats",
            "--settle-time", f"{settle_s:g}", *stack.loadtest_account_args()]
    history = report_dir / "locust_stats_history.csv"
    history.unlink(missing_ok=True)  # a previous run's rows are not this step's progress
    ramp_s = users / spawn_rate + settle_s
    with (Ticker(PROGRESS_SECONDS, locust_progress(history), prefix=f"[capacity] {users} users"),
          open(report_dir / "stdout.txt", "w") as out, open(report_dir / "stderr.txt", "w") as err):
        process = subprocess.Popen(argv, stdout=out, stderr=err, text=True, cwd=str(report_dir),
                                   env={**os.environ, **stack.loadtest_env()})
        # Server CPU and the per-view split cover the steady state only, like Locust's --reset-stats:
        # the ramp-up's logins are reported apart.
        try:
            process.wait(timeout=ramp_s + 1)
        except subprocess.TimeoutExpired:
            pass
        samples = metric_samples(stack)
        views_before, waits_before = view_cpu(samples), queue_waits(samples)
        sampler = CpuSampler(stack.server_pids()).start()
        try:
            returncode = process.wait(timeout=3600)
        finally:
            if process.poll() is None:
                process.kill()
        cpu = sampler.stop()
        split = []
        if stack.options.nginx_timing_log:
            time.sleep(1.5)  # nginx flushes the log's buffer every second
            split = seconds_split(read_timing_log(stack.nginx.timing_log), sampler.intervals())
        samples = metric_samples(stack)
        views = view_cpu_delta(views_before, view_cpu(samples))
        waits = queue_wait_delta(waits_before, queue_waits(samples))
    result = subprocess.CompletedProcess(argv, returncode, (report_dir / "stdout.txt").read_text(),
                                         (report_dir / "stderr.txt").read_text())
    (report_dir / "stdout.txt").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    (report_dir / "stderr.txt").unlink()
    figures = loadtest_figures(report_dir, stack)
    if figures.get("requests"):
        # requests/s over the measured window (the summary's run times include the ramp-up)
        figures["rps"] = round(figures["requests"] / measured_s, 1)
        # the CPU of every server process over the steady state / the HTTP requests completed in it
        figures["server_cpu_ms_per_request"] = round(
            cpu["server_cpu_cores"] * cpu["wall_s"] * 1000 / figures["requests"], 2)
    summary = stack.loadtest_summary(report_dir)
    rows = summary.get("thresholds") or []
    http_rows = [r for r in rows if r.get("target") == "http"]
    http_pass = bool(http_rows) and all(r.get("result") in ("pass", "skip") for r in http_rows)
    if summary.get("invalid_reasons") or result.returncode not in (0, 1):
        verdict, sla_met = "invalid run", False
    elif result.returncode == 0:
        verdict, sla_met = "pass", True
    else:
        # The user's SLA is about HTTP requests; WebSocket and login gates are reported, not stepped on.
        missed = [f"{r['target']} {r['threshold']}" for r in rows if r.get("result") == "FAIL"]
        verdict, sla_met = ("HTTP SLA met; missed: " if http_pass else "SLA missed: ") + ", ".join(missed), http_pass
    return {"users": users, "spawn_rate": spawn_rate, "run_time": run_time, "exit_code": result.returncode,
            "verdict": verdict, "sla_met": sla_met, **figures, **cpu, "views": views,
            "tail_endpoints": busiest_endpoints(summary), "queue_wait": waits, "seconds_split": split,
            "report_dir": str(report_dir.relative_to(REPO_ROOT)) if report_dir.is_relative_to(REPO_ROOT) else str(report_dir),
            "tail": result.stdout[-3000:]}


TAIL_ENDPOINTS = 5
TAIL_RATIO = 4.0  # the tail goal: p99 at most 4 x p50 for each of the busiest endpoints


def busiest_endpoints(summary: dict, count: int = TAIL_ENDPOINTS) -> list[dict]:
    """The `count` HTTP entries with the most requests (logins and WebSocket excluded) over the steady
    state, with the gate's exact p50 and p99 and their ratio."""
    entries = [e for e in summary.get("entries") or [] if e.get("kind") == "http" and e.get("requests")]
    entries.sort(key=lambda e: -e["requests"])
    return [{"endpoint": f"{e['type']} {e['name']}", "requests": e["requests"], "p50_ms": e["p50_ms"],
             "p99_ms": e["p99_ms"], "ratio": round(e["p99_ms"] / e["p50_ms"], 1) if e["p50_ms"] else None}
            for e in entries[:count]]


def fmt_tail(row: dict) -> str:
    lines = [(f"{row['users']} users, steady state: the {TAIL_ENDPOINTS} busiest endpoints (logins excluded), "
              f"goal p99 <= {TAIL_RATIO:g} x p50"), "", "| endpoint | requests | p50 ms | p99 ms | p99 / p50 |",
             "|---|---:|---:|---:|---:|"]
    for e in row.get("tail_endpoints") or []:
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.1f}" + ("" if e["ratio"] <= TAIL_RATIO else " (over)")
        lines.append(f"| {e['endpoint']} | {e['requests']} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {ratio} |")
    waits = row.get("queue_wait")
    if waits and waits["requests"]:
        lines += ["", (f"Waiting before the application (nginx's X-Request-Start to Django, "
                       f"workorder_http_request_queue_seconds), {waits['requests']} requests: "
                       + ", ".join(f"{share:g} % within {bound:g} ms" for bound, share in waits["within_ms"]))]
    return "\n".join(lines)


SLOW_SHARE = 0.10  # a second is slow when this share of its GETs took over TAIL_RATIO x the steady state's median


def read_timing_log(path: Path) -> list[tuple[float, float, str]]:
    """nginx's timing log (NginxConfig.timing_log): (start, seconds, method) of every /api/ request."""
    requests = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[4].startswith("/api/"):
            end, took = float(parts[0]), float(parts[1])
            requests.append((end - took, took, parts[3]))
    return requests


def seconds_split(requests: list[tuple[float, float, str]], intervals: list) -> list[dict]:
    """The steady state's sampler intervals (~1 s each) in two groups, calm and slow (SLOW_SHARE of the
    interval's GETs over TAIL_RATIO x the median GET): per group the load that arrived (requests and
    writes per second) against what it cost (gunicorn's and PostgreSQL's CPU per request), so a slow
    second reads as more work, heavier work, or the same work costing more; and how full the machine
    was (idle cores) and its busiest gunicorn process (a worker's threads share one GIL, so a worker
    near 1 core is a ceiling even with a core idle)."""
    if not intervals:
        return []
    requests = sorted(requests)
    starts = [start for start, _, _ in requests]

    def arrived(t0: float, t1: float) -> list[tuple[float, float, str]]:
        return requests[bisect.bisect_left(starts, t0):bisect.bisect_left(starts, t1)]

    gets = sorted(took for _, took, method in arrived(intervals[0][0], intervals[-1][1]) if method == "GET")
    if not gets:
        return []
    slow_after = TAIL_RATIO * gets[len(gets) // 2]
    groups: dict[str, list] = {"calm": [], "slow": []}
    for t0, t1, cpu, idle, busiest in intervals:
        these = arrived(t0, t1)
        got = [took for _, took, method in these if method == "GET"]
        if got:
            slow = sum(1 for took in got if took > slow_after) >= SLOW_SHARE * len(got)
            groups["slow" if slow else "calm"].append((t1 - t0, these, got, cpu, idle, busiest))
    rows = []
    for name, members in groups.items():
        wall = sum(m[0] for m in members)
        n = sum(len(m[1]) for m in members)
        if not n:
            continue
        cpu = {group: round(sum(m[3].get(group, 0.0) for m in members) * 1000 / n, 2)
               for group in ("gunicorn", "postgresql")}
        got = sorted(took for m in members for took in m[2])
        writes = sum(1 for m in members for _, _, method in m[1] if method != "GET")
        rows.append({"seconds": name, "count": len(members), "rps": round(n / wall, 1),
                     "writes_per_s": round(writes / wall, 1), "get_p50_ms": round(1000 * got[len(got) // 2], 1),
                     "gunicorn_cpu_ms": cpu["gunicorn"], "postgresql_cpu_ms": cpu["postgresql"],
                     "idle_cores": round(sum(m[4] for m in members) / wall, 2),
                     "busiest_worker_cores": round(sum(m[5] for m in members) / wall, 2)})
    return rows


def fmt_seconds(row: dict) -> str:
    if not row.get("seconds_split"):
        return ""
    lines = [(f"{row['users']} users, steady state, second by second (nginx's timing log): slow seconds have "
              f"{100 * SLOW_SHARE:g} % or more of their GETs over {TAIL_RATIO:g} x the median GET"), "",
             ("| seconds | count | requests/s | writes/s | GET p50 ms | gunicorn CPU ms / request | "
              "PostgreSQL CPU ms / request | idle cores | busiest gunicorn worker, cores |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in row["seconds_split"]:
        lines.append(f"| {r['seconds']} | {r['count']} | {r['rps']:.1f} | {r['writes_per_s']:.1f} | {r['get_p50_ms']:.1f} | "
                     f"{r['gunicorn_cpu_ms']:.2f} | {r['postgresql_cpu_ms']:.2f} | {r['idle_cores']:.2f} | "
                     f"{r['busiest_worker_cores']:.2f} |")
    return "\n".join(lines)


def metric_samples(stack: Stack) -> list:
    """Every sample of one scrape of gunicorn's /metrics/ (empty if the scrape failed)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = stack.get_metrics()
    if status != 200:
        return []
    return [sample for family in text_string_to_metric_families(body.decode()) for sample in family.samples]


def queue_waits(samples: list) -> dict[float, float]:
    """gunicorn's cumulative workorder_http_request_queue_seconds buckets {upper bound in s: requests},
    summed over its workers (+Inf included)."""
    buckets: dict[float, float] = {}
    for sample in samples:
        if sample.name == "workorder_http_request_queue_seconds_bucket":
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def queue_wait_delta(before: dict[float, float], after: dict[float, float]) -> dict:
    """Over the steady state: requests stamped by nginx, and the share that waited within each bucket
    up to 100 ms (the histogram's bounds, so each share is exact, not interpolated)."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    within = [(bound * 1000, round(100 * (after[bound] - before.get(bound, 0.0)) / total, 2))
              for bound in sorted(after) if bound <= 0.1] if total else []
    return {"requests": int(total), "within_ms": within}


def view_cpu(samples: list) -> dict[tuple[str, str], list[float]]:
    """{(view, method): [gunicorn thread CPU seconds, responses]} summed over gunicorn's workers, from its
    /metrics/ (workorder_http_request_cpu_seconds_total and django_http_responses_total_by_status_view_method)."""
    totals: dict[tuple[str, str], list[float]] = {}
    for sample in samples:
        if sample.name == "workorder_http_request_cpu_seconds_total":
            slot = 0
        elif sample.name == "django_http_responses_total_by_status_view_method_total":
            slot = 1
        else:
            continue
        key = (sample.labels.get("view", ""), sample.labels.get("method", ""))
        totals.setdefault(key, [0.0, 0.0])[slot] += sample.value
    return totals


def view_cpu_delta(before: dict, after: dict) -> list[dict]:
    """Per view over the steady state: responses, CPU ms per response, share of the views' CPU."""
    rows = []
    for key, (cpu, count) in after.items():
        cpu0, count0 = before.get(key, [0.0, 0.0])
        if count - count0 > 0:
            rows.append({"view": key[0], "method": key[1], "responses": int(count - count0),
                         "cpu_s": cpu - cpu0})
    total = sum(r["cpu_s"] for r in rows) or 1.0
    for r in rows:
        r["cpu_ms_per_response"] = round(r["cpu_s"] * 1000 / r["responses"], 2)
        r["cpu_share"] = round(r["cpu_s"] / total, 3)
    return sorted(rows, key=lambda r: -r["cpu_s"])


def fmt_views(row: dict) -> str:
    lines = [f"{row['users']} users, steady state: gunicorn thread CPU per view (workorder_http_request_cpu_seconds_total)",
             "", "| view | method | responses | CPU ms / response | share of views' CPU |", "|---|---|---:|---:|---:|"]
    for r in row.get("views") or []:
        lines.append(f"| {r['view']} | {r['method']} | {r['responses']} | {r['cpu_ms_per_response']:.2f} | "
                     f"{100 * r['cpu_share']:.1f} % |")
    return "\n".join(lines)


def fmt_table(rows: list[dict]) -> str:
    lines = [("| users | requests/s | average ms | p50 ms | p95 ms | p99 ms | error rate | server CPU (cores of "
              f"{psutil.cpu_count()}) | server CPU ms / request | machine busy | verdict | logins: avg ms (n) | "
              "WebSocket: p95 ms, failures |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.get('users')} | {r.get('rps', 0):.1f} | {r.get('avg_ms', 0):.0f} | {r.get('p50_ms', 0):.0f} | "
                     f"{r.get('p95_ms', 0):.0f} | {r.get('p99_ms', 0):.0f} | {100 * r.get('error_rate', 0):.3f} % | "
                     f"{r.get('server_cpu_cores', 0):.2f} | {r.get('server_cpu_ms_per_request', 0):.2f} | "
                     f"{r.get('machine_busy_cores', 0):.2f} | {r.get('verdict', '')} | "
                     f"{(r.get('login_avg_ms') or 0):.0f} ({r.get('logins') or 0}) | "
                     f"{(r.get('ws_p95_ms') or 0):.0f}, {r.get('ws_failures') or 0} |")
    return "\n".join(lines)


def fmt_floor(floor: dict) -> str:
    lines = ["| closed loop, no think time | users | requests/s | average ms | p50 ms | p95 ms | p99 ms | errors | server CPU |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in floor.items():
        lines.append(f"| {name} | {r['users']} | {r['rps']:.0f} | {r['avg_ms']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['p99_ms']:.0f} | {r['failures']} | {r['server_cpu_cores']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="100,200,400,800,1600,3200",
                        help="user counts, in order; stops at the first that misses the SLA (default %(default)s)")
    parser.add_argument("--step-time", type=int, default=60,
                        help="seconds of steady state measured per step, after the ramp-up (default %(default)s)")
    parser.add_argument("--spawn-rate", type=float, default=2,
                        help="users started per second (default %(default)s: each start is one login, "
                             "~30 ms of CPU with Argon2id)")
    parser.add_argument("--settle-time", type=float, default=5,
                        help="seconds between the last user's start and the steady state: its login and the "
                             "requests that login slows down count as ramp-up (default %(default)s)")
    parser.add_argument("--work-orders", type=int, default=20000)
    parser.add_argument("--min-tasks", type=int, default=100000)
    parser.add_argument("--operators", type=int, default=1000,
                        help="seeded account pools: larger than the stack test's 200/50/50 so that 400+ "
                             "simulated users do not share accounts")
    parser.add_argument("--supervisors", type=int, default=250)
    parser.add_argument("--makers", type=int, default=250)
    parser.add_argument("--floor-users", type=int, default=16)
    parser.add_argument("--floor-time", type=int, default=20)
    parser.add_argument("--login-samples", type=int, default=10)
    parser.add_argument("--keep-going", action="store_true", help="run every step even after the SLA breaks")
    parser.add_argument("--workers", type=int, help="GUNICORN_WORKERS (default: the package's, CPUs + 1)")
    parser.add_argument("--threads", type=int, help="GUNICORN_THREADS (default: the package's)")
    parser.add_argument("--worker-class", help="GUNICORN_WORKER_CLASS (default: the package's)")
    parser.add_argument("--switch-interval-ms", type=int, help="GUNICORN_SWITCH_INTERVAL_MS (default: the package's)")
    parser.add_argument("--seconds", action="store_true",
                        help="log nginx's time per request and print each step's calm and slow seconds: the load "
                             "that arrived and what it cost (for reading the tail)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "reports" / "bench")
    args = parser.parse_args(argv)

    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",") if s.strip()]
    options = StackOptions(work_orders=args.work_orders, min_tasks=args.min_tasks, operators=args.operators,
                           supervisors=args.supervisors, makers=args.makers, rate_limit="100000r/s", rate_burst=100000,
                           nginx_access_log=False, nginx_timing_log=args.seconds, scrape_interval="15s",  # the module's scrape interval
                           gunicorn_workers=args.workers,
                           gunicorn_extra_env={**({"GUNICORN_THREADS": str(args.threads)} if args.threads else {}),
                                               **({"GUNICORN_WORKER_CLASS": args.worker_class}
                                                  if args.worker_class else {}),
                                               **({"GUNICORN_SWITCH_INTERVAL_MS": str(args.switch_interval_ms)}
                                                  if args.switch_interval_ms else {})})
    stack = Stack(options)
    with_floor(stack)
    started = datetime.now(UTC)
    results: dict = {"started": started.isoformat(timespec="seconds"), "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                     "machine": {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
                                 "python": platform.python_version(), "kernel": platform.release()}}
    try:
        stack.start()
        results["seed"] = {"counts": stack.counts, "timings": stack.timings}
        start_floor(stack)

        print("\n== login cost (password hashing) ==")
        results["login"] = measure_login_cost(stack, args.login_samples)
        print(json.dumps(results["login"]))

        print("\n== framework floor (closed loop) ==")
        token = stack.login("loadtest-supervisor-0001")
        results["floor"] = {
            "/floor/ (trivial Django JSON view)": run_saturation(stack, "FloorUser", args.floor_users, args.floor_time, out_dir, {}),
            "/api/tasks/ (supervisor, page 1 of 20)": run_saturation(stack, "TaskListUser", args.floor_users, args.floor_time,
                                                                    out_dir, {"BENCH_TOKEN": token}),
        }
        print(fmt_floor(results["floor"]))

        rows: list[dict] = []
        results["steps"] = rows
        for users in steps:
            spawn_rate = args.spawn_rate
            print(f"\n== {users} users (spawn rate {spawn_rate:g}/s, {args.step_time}s measured) ==", flush=True)
            row = run_step(stack, users, args.step_time, out_dir, spawn_rate, args.settle_time)
            rows.append(row)
            print(row.pop("tail"))
            print(fmt_table(rows) + "\n\n" + fmt_views(row) + "\n\n" + fmt_tail(row) + "\n\n" + fmt_seconds(row),
                  flush=True)
            _write(out_dir, results, rows)
            if not row["sla_met"] and not args.keep_going:
                break
    finally:
        stack.stop()
        stack.collect_logs(out_dir / "logs")
        stack.cleanup()
    rows = results.get("steps", [])
    passing = [r["users"] for r in rows if r.get("sla_met")]
    results["largest_passing_users"] = max(passing) if passing else None
    _write(out_dir, results, rows)
    print("\n" + (out_dir / "capacity.md").read_text())
    return 0


def _write(out_dir: Path, results: dict, rows: list[dict]) -> None:
    (out_dir / "capacity.json").write_text(json.dumps(results, indent=2, default=str))
    md = [f"Capacity benchmark, started {results['started']} on {results['machine']}", "",
          f"Command: `{results['command']}`", ""]
    if "login" in results:
        login = results["login"]
        md += [(f"Login cost: {login['hasher']} ({login['parameters']}): check_password "
                f"{login['check_password_ms']} ms of CPU; POST /api/auth/login/ through nginx {login['login_http_ms']} ms "
                f"(average of {login['samples']} sequential logins)."), ""]
    if "floor" in results:
        md += ["Framework floor:", "", fmt_floor(results["floor"]), ""]
    md += ["SLA steps (workorder-loadtest, HTTP requests only; server CPU over the steady state):", "",
           fmt_table(rows), ""]
    for row in rows:
        md += [fmt_views(row), "", fmt_tail(row), "", fmt_seconds(row), ""]
    if results.get("largest_passing_users") is not None:
        md.append(f"Largest user count meeting the SLA: {results['largest_passing_users']}")
    (out_dir / "capacity.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    sys.exit(main())
