"""Locust event hooks: options, raw-sample collection (shipped from workers to the master), account
pools, setup errors, and the SLA gate at the end of every run.

Where the gate runs: on the process that owns the aggregated view - the local runner in a plain run,
the master in ``--processes`` and master/worker runs (workers skip it). Workers send their raw
samples to the master piggybacked on Locust's own periodic stats report (``report_to_master`` /
``worker_report``), including the final report a worker sends when it quits, so the master's samples
cover exactly what Locust's own statistics cover.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections import Counter
from typing import Any

import gevent

from . import sla
from .accounts import AccountPool
from .options import add_to_locust_parser

log = logging.getLogger("workorder_loadtest")

WIRE_KEY = "workorder_sla"
SETUP_ERROR_MESSAGE = "workorder_setup_error"


class Collector:
    """Raw samples per (request_type, name) plus setup errors and warnings, for one process."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.entries: dict[tuple[str, str], sla.EntrySamples] = {}
        self.setup_errors: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()

    def entry(self, request_type: str, name: str) -> sla.EntrySamples:
        key = (request_type, name)
        if key not in self.entries:
            self.entries[key] = sla.EntrySamples(request_type, name)
        return self.entries[key]

    def on_request(self, request_type, name, response_time, response_length=0, response=None, context=None,
                   exception=None, **_kwargs) -> None:
        failed = exception is not None
        conflict = bool(isinstance(context, dict) and context.get("conflict"))
        no_response = failed and request_type in sla.HTTP_METHODS and (
            response is None or not getattr(response, "status_code", 0))
        self.entry(request_type, name).add(response_time, failed, conflict=conflict, no_response=no_response)

    def drain(self) -> dict[str, Any]:
        data = {
            "entries": [e.to_wire() for e in self.entries.values()],
            "setup_errors": dict(self.setup_errors),
            "warnings": dict(self.warnings),
        }
        self.reset()
        return data

    def merge(self, data: dict[str, Any]) -> None:
        for item in data.get("entries", []):
            e = sla.EntrySamples.from_wire(item)
            self.entry(e.request_type, e.name).merge(e)
        self.setup_errors.update(data.get("setup_errors", {}))
        self.warnings.update(data.get("warnings", {}))


collector = Collector()
_state: dict[str, Any] = {"pool": None, "thresholds": None, "config_error": None, "started": None,
                          "samples_since": None}


def _runner_kind(environment) -> str:
    from locust.runners import LocalRunner, MasterRunner, WorkerRunner

    runner = getattr(environment, "runner", None)
    if isinstance(runner, WorkerRunner):
        return "worker"
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, LocalRunner):
        return "local"
    return "none"


def account_pool(environment) -> AccountPool:
    """This process's pool of seeded accounts (worker-aware numbering)."""
    if _state["pool"] is None:
        opts = environment.parsed_options
        index, count = 0, 1
        if _runner_kind(environment) == "worker":
            index = max(0, int(getattr(environment.runner, "worker_index", 0) or 0))
            count = max(index + 1, int(getattr(opts, "expect_workers", 1) or 1))
        _state["pool"] = AccountPool(
            getattr(opts, "account_prefix", "loadtest") or "loadtest",
            {"operator": getattr(opts, "operators", 200), "supervisor": getattr(opts, "supervisors", 50),
             "maker": getattr(opts, "makers", 50)},
            worker_index=index, worker_count=count,
        )
    return _state["pool"]


def warning(environment, message: str) -> None:
    if message not in collector.warnings:
        log.warning(message)
    collector.warnings[message] += 1


def setup_error(environment, message: str) -> None:
    """A problem with the target's setup (accounts, catalog, ...): the run is invalid; stop it early."""
    kind = _runner_kind(environment)
    first = message not in collector.setup_errors
    if first:
        log.error("setup error: %s", message)
    if kind == "worker":
        if first:
            try:
                environment.runner.send_message(SETUP_ERROR_MESSAGE, {"message": message})
            except Exception:  # noqa: BLE001 - the final stats report still carries it
                pass
        collector.setup_errors[message] += 1
        return
    collector.setup_errors[message] += 1
    if first and kind in ("local", "master"):
        _quit_soon(environment)


def _quit_soon(environment) -> None:
    if _state.get("quitting"):
        return
    _state["quitting"] = True

    def stop():
        log.error("stopping the run: the verdict is already 'invalid'")
        environment.runner.quit()

    gevent.spawn_later(0.5, stop)


def _on_setup_error_message(environment, msg, **_kwargs) -> None:
    message = (msg.data or {}).get("message", "unknown setup error")
    # counted again by the worker's final report; remember that it happened, and stop the run
    if message not in collector.setup_errors:
        log.error("setup error on a worker: %s", message)
        collector.setup_errors[message] += 0
        _quit_soon(environment)


# --- event listeners -------------------------------------------------------------------------

def on_init_parser(parser, **_kwargs) -> None:
    add_to_locust_parser(parser)


def on_init(environment, runner=None, **_kwargs) -> None:
    from .users import NotificationUser

    opts = environment.parsed_options
    ws_users = int(getattr(opts, "ws_users", 2) or 0) if opts is not None else 2
    NotificationUser.fixed_count = max(0, ws_users)
    if ws_users <= 0:
        NotificationUser.weight = 0
    kind = _runner_kind(environment)
    if kind in ("master", "local"):
        try:
            _state["thresholds"] = thresholds_from_options(opts)
        except sla.ThresholdError as exc:
            _state["config_error"] = str(exc)
            log.error("invalid SLA configuration: %s", exc)
            gevent.spawn_later(0, environment.runner.quit)
        if kind == "master":
            environment.runner.register_message(SETUP_ERROR_MESSAGE, _on_setup_error_message)


def thresholds_from_options(opts) -> list[sla.Threshold]:
    return sla.build_thresholds(
        file=getattr(opts, "sla_file", "") or None,
        flags=getattr(opts, "sla", None) or (),
        avg_ms=getattr(opts, "sla_avg_ms", None),
        p95_ms=getattr(opts, "sla_p95_ms", None),
        error_rate=getattr(opts, "sla_error_rate", None),
    )


def on_test_start(environment, **_kwargs) -> None:
    if _state["started"] is None:
        _state["started"] = dt.datetime.now(dt.timezone.utc)


def on_report_to_master(client_id, data, **_kwargs) -> None:
    data[WIRE_KEY] = collector.drain()


def on_worker_report(client_id, data, **_kwargs) -> None:
    if WIRE_KEY in data:
        collector.merge(data[WIRE_KEY])


def on_spawning_complete(user_count=None, **_kwargs) -> None:
    env = _state.get("environment")
    if env is not None and getattr(env, "reset_stats", False):
        on_reset_stats()


def on_reset_stats(**_kwargs) -> None:
    collector.reset()
    _state["samples_since"] = dt.datetime.now(dt.timezone.utc)


def run_facts(environment) -> sla.RunFacts:
    runner = environment.runner
    exceptions = sum(int(e.get("count", 1)) for e in getattr(runner, "exceptions", {}).values())
    cpu = bool(getattr(runner, "cpu_warning_emitted", False) or getattr(runner, "worker_cpu_warning_emitted", False))
    setup = dict(collector.setup_errors)
    if _state["config_error"]:
        setup[f"invalid SLA configuration: {_state['config_error']}"] = 1
    return sla.RunFacts(exceptions=exceptions, cpu_warning=cpu, setup_errors={k: max(v, 1) for k, v in setup.items()},
                        warnings=dict(collector.warnings))


def gate(environment) -> sla.Verdict | None:
    """Evaluate the SLA, print the table, write the summary, set the process exit code."""
    try:
        opts = environment.parsed_options
        thresholds = _state["thresholds"]
        if thresholds is None:
            thresholds = [] if _state["config_error"] else thresholds_from_options(opts)
        verdict = sla.evaluate(collector.entries.values(), thresholds, run_facts(environment),
                               include_login=bool(getattr(opts, "sla_include_login", False)))
        sys.stdout.write(sla.render_table(verdict))
        sys.stdout.flush()
        summary_file = getattr(opts, "summary_file", "") if opts is not None else ""
        if summary_file:
            write_summary(summary_file, environment, verdict)
        environment.process_exit_code = verdict.exit_code
        return verdict
    except Exception:  # noqa: BLE001 - never let a broken gate pass a run
        log.exception("the SLA gate itself failed; treating the run as invalid")
        environment.process_exit_code = sla.EXIT_INVALID
        return None


def write_summary(path: str, environment, verdict: sla.Verdict) -> None:
    from locust import __version__ as locust_version

    opts = environment.parsed_options
    data = verdict.as_dict()
    data["run"] = {
        "host": environment.host,
        "users": getattr(opts, "num_users", None),
        "spawn_rate": getattr(opts, "spawn_rate", None),
        "run_time": getattr(opts, "run_time", None),
        "runner": _runner_kind(environment),
        "workers": getattr(opts, "expect_workers", None) if _runner_kind(environment) == "master" else None,
        "ws_users": getattr(opts, "ws_users", None),
        "sla_file": getattr(opts, "sla_file", "") or None,
        "include_login_in_http": bool(getattr(opts, "sla_include_login", False)),
        "started_at": _state["started"].isoformat() if _state["started"] else None,
        # samples cover [samples_since, ended_at]: later than started_at after --reset-stats
        "samples_since": (_state.get("samples_since") or _state["started"] or dt.datetime.now(dt.timezone.utc)).isoformat(),
        "ended_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "locust_version": locust_version,
        "run_id": os.environ.get("WORKORDER_LOADTEST_RUN_ID"),
    }
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)


def on_quitting(environment, **_kwargs) -> None:
    if _runner_kind(environment) == "worker":
        return
    gate(environment)


_installed = False


def install(events) -> None:
    """Register every listener once per process."""
    global _installed
    if _installed:
        return
    _installed = True
    events.init_command_line_parser.add_listener(on_init_parser)

    def init(environment, runner=None, **kwargs):
        _state["environment"] = environment
        on_init(environment, runner=runner, **kwargs)

    events.init.add_listener(init)
    events.request.add_listener(collector.on_request)
    events.test_start.add_listener(on_test_start)
    events.report_to_master.add_listener(on_report_to_master)
    events.worker_report.add_listener(on_worker_report)
    events.spawning_complete.add_listener(on_spawning_complete)
    events.reset_stats.add_listener(on_reset_stats)
    events.quitting.add_listener(on_quitting)
