"""The suite's Locust listeners (they register on import): the thresholds and the preflight before
the run; raw samples per process, shipped from workers to the master on Locust's own worker reports
(the final one included); setup errors stopping the run; the verdict at ``quitting`` on the process
that sees every sample (the local runner or the master)."""

import contextlib
import datetime as dt
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gevent
from locust import __version__ as locust_version
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from . import gate
from .accounts import SEED_HINT, username

log = logging.getLogger("workorder_loadtest")
WIRE_KEY = "workorder_sla"

entries: dict[tuple[str, str], gate.Samples] = {}
setup_errors: Counter[str] = Counter()
warnings: Counter[str] = Counter()
run: dict[str, Any] = {}  # environment, thresholds, started_at, samples_since, stopping


def setup_error(environment, message: str) -> None:
    """The target is not set up for the suite (accounts, catalog): the run is invalid; stop it."""
    if message not in setup_errors:
        log.error("setup error: %s", message)
    setup_errors[message] += 1
    if not isinstance(environment.runner, WorkerRunner):  # a worker's reaches the master in its report
        _stop_soon(environment)


def warning(message: str) -> None:
    if message not in warnings:
        log.warning(message)
    warnings[message] += 1


def _stop_soon(environment) -> None:
    if not run.get("stopping"):
        run["stopping"] = True
        gevent.spawn_later(0.5, environment.runner.quit)  # not from inside the user's greenlet


@events.init.add_listener
def on_init(environment, **_kwargs) -> None:
    """Before any user starts, on the local runner or the master: the thresholds, then the preflight.
    A problem ends Locust with exit code 2 (SystemExit passes Locust's guard around listeners)."""
    run.update(environment=environment, started_at=None, samples_since=None, stopping=False)
    opts = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner):
        return
    try:
        run["thresholds"] = gate.build_thresholds(
            file=opts.sla_file or None, flags=opts.sla or (), avg_ms=opts.sla_avg_ms, p95_ms=opts.sla_p95_ms,
            error_rate=opts.sla_error_rate)
        problem = None if opts.skip_preflight else preflight(environment.host, opts)
    except gate.ThresholdError as exc:
        problem = f"invalid SLA configuration: {exc}"
    if problem:
        log.error(problem)
        sys.exit(gate.EXIT_INVALID)


def preflight(host: str | None, opts) -> str | None:
    """Why the first or the last account of a pool cannot log in, or None."""
    url = (host or "").rstrip("/") + "/api/auth/login/"
    for role in ("operator", "supervisor", "maker"):
        size = getattr(opts, f"{role}s")
        if size <= 0:
            return f"preflight: the {role} pool is empty (--{role}s {size})"
        for number in sorted({1, size}):
            if problem := login_problem(url, username(opts.account_prefix, role, number), opts.password,
                                        opts.login_timeout):
                return f"preflight: {problem}"
    return None


def login_problem(url: str, name: str, password: str, timeout: float) -> str | None:
    request = urllib.request.Request(url, json.dumps({"username": name, "password": password}).encode(),
                                     {"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:  # URLError, refused, timed out, not a URL
        return f"host unreachable: POST {url} failed: {getattr(exc, 'reason', exc)}"
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
        if status == 200 and isinstance(json.loads(raw).get("token"), str):
            return None
    if status in (400, 401, 403):
        return f"login rejected for {name} (HTTP {status}); {SEED_HINT}"
    return f"login for {name} answered HTTP {status} {raw[:200]!r}: the service is not healthy"


@events.request.add_listener
def on_request(request_type, name, response_time, response=None, exception=None, **_kwargs) -> None:
    gate.record(entries, request_type, name, response_time, exception is not None,
                getattr(response, "status_code", None))


@events.report_to_master.add_listener
def on_report_to_master(client_id, data, **_kwargs) -> None:
    data[WIRE_KEY] = {"entries": [[*key, asdict(s)] for key, s in entries.items()],
                      "setup_errors": dict(setup_errors), "warnings": dict(warnings)}
    for shipped in (entries, setup_errors, warnings):
        shipped.clear()


@events.worker_report.add_listener
def on_worker_report(client_id, data, **_kwargs) -> None:
    wire = data.get(WIRE_KEY, {})
    for request_type, name, samples in wire.get("entries", []):
        entries.setdefault((request_type, name), gate.Samples()).merge(gate.Samples(**samples))
    setup_errors.update(wire.get("setup_errors", {}))
    warnings.update(wire.get("warnings", {}))
    if wire.get("setup_errors"):
        _stop_soon(run["environment"])


@events.test_start.add_listener
def on_test_start(**_kwargs) -> None:
    run["started_at"] = run.get("started_at") or dt.datetime.now(dt.UTC)


@events.spawning_complete.add_listener
def on_spawning_complete(**_kwargs) -> None:
    environment = run["environment"]
    if not environment.reset_stats:  # --reset-stats: drop the ramp-up, like Locust's statistics
        return
    settle = environment.parsed_options.settle_time
    if settle > 0:
        # The last users started are still logging in: their logins (and the requests they slow
        # down) end the ramp-up later. Locust has just reset its statistics; both reset again then.
        # In a distributed run, the workers' reports then in transit (up to one interval, 3 s) still count.
        gevent.spawn_later(settle, _settled, environment)
    else:
        reset()


def _settled(environment) -> None:
    environment.stats.reset_all()
    reset()


@events.reset_stats.add_listener
def reset(**_kwargs) -> None:
    entries.clear()
    run["samples_since"] = dt.datetime.now(dt.UTC)


@events.quitting.add_listener
def on_quitting(environment, **_kwargs) -> None:
    """The verdict: printed, written to --summary-file, and this process's exit code."""
    if isinstance(environment.runner, WorkerRunner):
        return
    try:
        opts, runner, now = environment.parsed_options, environment.runner, dt.datetime.now(dt.UTC)
        verdict = gate.evaluate(
            entries, run["thresholds"], include_login=opts.sla_include_login, setup_errors=dict(setup_errors),
            exceptions=sum(e.get("count", 1) for e in runner.exceptions.values()),
            cpu_warning=bool(runner.cpu_warning_emitted or getattr(runner, "worker_cpu_warning_emitted", False)))
        print(gate.table(verdict), end="", flush=True)
        master = isinstance(runner, MasterRunner)
        verdict |= {"setup_errors": dict(setup_errors), "warnings": dict(warnings), "run": {
            "run_id": os.environ.get("WORKORDER_LOADTEST_RUN_ID"), "host": environment.host,
            "runner": "master" if master else "local", "workers": opts.expect_workers if master else None,
            "users": opts.num_users, "locust_version": locust_version,
            "started_at": (run["started_at"] or now).isoformat(),
            # the samples cover [samples_since, ended_at]: later than started_at after --reset-stats
            "samples_since": (run["samples_since"] or run["started_at"] or now).isoformat(),
            "ended_at": now.isoformat()}}
        if opts.summary_file:
            Path(opts.summary_file).parent.mkdir(parents=True, exist_ok=True)
            Path(opts.summary_file).write_text(json.dumps(verdict, indent=2) + "\n")
        environment.process_exit_code = verdict["exit_code"]
    except Exception:
        log.exception("the SLA gate failed; the run counts as invalid")
        environment.process_exit_code = gate.EXIT_INVALID
