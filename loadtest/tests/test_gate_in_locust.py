"""The gate inside real Locust processes (plain `locust -f`), for the paths the fake service cannot
provoke: exceptions in user code, a load generator over the CPU threshold, and Locust's own
"exit 1 on any failure" default, which must not decide the verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LOCUSTFILE = '''
import os
from locust import User, constant, task
import locust.runners
from workorder_loadtest import hooks, options  # noqa: F401 - their listeners register on import

MODE = os.environ["GATE_TEST_MODE"]
if MODE == "cpu":
    locust.runners.CPU_MONITOR_INTERVAL = 0.2
    locust.runners.CPU_WARNING_THRESHOLD = -1

class Probe(User):
    wait_time = constant(0.05)
    n = 0

    @task
    def work(self):
        Probe.n += 1
        failed = MODE == "failures" and Probe.n % 10 == 0
        self.environment.events.request.fire(
            request_type="GET", name="[Probe] Get", response_time=5.0, response_length=0, response=None,
            context={}, exception=RuntimeError("HTTP 500") if failed else None)
        if MODE == "exception" and Probe.n == 3:
            raise ValueError("a bug in the suite")
'''


def run_locust(tmp_path: Path, mode: str, *extra: str) -> tuple[int, dict, str]:
    path = tmp_path / "probe_locustfile.py"
    path.write_text(LOCUSTFILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKORDER_", "LOCUST_"))}
    env["GATE_TEST_MODE"] = mode
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(path), "--headless", "-u", "2", "-r", "2", "-t", "2s",
         "--host", "http://127.0.0.1:9", "--summary-file", str(summary), "--skip-preflight", "--only-summary",
         *extra], env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(summary.read_text()), proc.stdout + proc.stderr


@pytest.mark.parametrize("processes", [(), ("--processes", "2")], ids=["local", "processes"])
def test_clean_run_passes(tmp_path, processes):
    code, summary, out = run_locust(tmp_path, "ok", *processes)
    assert code == 0 and summary["verdict"] == "pass" and summary["invalid_reasons"] == [], out
    assert summary["run"]["runner"] == ("master" if processes else "local")
    assert summary["groups"]["http"]["requests"] > 10 and summary["groups"]["http"]["failures"] == 0


def test_failures_miss_the_sla_with_exit_1(tmp_path):
    code, summary, out = run_locust(tmp_path, "failures")
    assert code == 1 and summary["verdict"] == "fail", out
    assert 0.08 < summary["groups"]["http"]["error_rate"] <= 0.1  # every 10th request fails


def test_failures_below_the_threshold_pass_despite_locusts_default(tmp_path):
    # Locust alone would exit 1 on any failed request; the gate decides: 10 % < 50 %.
    code, summary, out = run_locust(tmp_path, "failures", "--sla-error-rate", "0.5")
    assert code == 0 and summary["verdict"] == "pass", out
    assert 0.08 < summary["groups"]["http"]["error_rate"] <= 0.1


@pytest.mark.parametrize("processes", [(), ("--processes", "2")], ids=["local", "processes"])
def test_exceptions_in_user_code_make_the_run_invalid(tmp_path, processes):
    code, summary, out = run_locust(tmp_path, "exception", *processes)
    assert code == 2 and summary["verdict"] == "invalid", out
    count = 2 if processes else 1  # one per process: each raises on its own third request
    assert summary["exceptions"] == count
    reason = f"{count} exception(s) in the load test's own code (see the exceptions report)"
    assert summary["invalid_reasons"] == [reason]


def test_overloaded_load_generator_makes_the_run_invalid(tmp_path):
    code, summary, out = run_locust(tmp_path, "cpu")
    assert code == 2 and summary["cpu_warning"] is True and summary["verdict"] == "invalid", out
    assert [r for r in summary["invalid_reasons"] if "90% CPU" in r], summary["invalid_reasons"]
