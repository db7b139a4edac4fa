"""workorder-loadtest's arguments and exit codes, end to end against a fake service on loopback.

Each run is bounded to a few seconds of Locust run time; the fake service (fake_service.py) speaks
the workorder API, including the WebSocket push of assignment notifications.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_service import FakeService

from workorder_loadtest import cli

POOLS = ["--operators", "20", "--supervisors", "6", "--makers", "6"]


def run_cli(host: str, report_dir: Path, *extra: str, password: str | None = "secret", timeout: float = 90,
            env: dict[str, str] | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKORDER_", "LOCUST_"))} | (env or {})
    argv = [sys.executable, "-m", "workorder_loadtest.cli", "--host", host, "--report-dir", str(report_dir),
            "--users", "6", "--spawn-rate", "6", "--run-time", "3s", "--ws-users", "0", *POOLS, *extra]
    if password is not None:
        argv += ["--password", password]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    proc.elapsed = time.monotonic() - started
    return proc


def summary(report_dir: Path) -> dict:
    return json.loads((report_dir / "summary.json").read_text())


def aggregated_requests(output: str) -> int:
    """Locust's own request count, from the final stats table it prints (the CSV may lag)."""
    line = next(line for line in output.splitlines() if line.strip().startswith("Aggregated"))
    return int(line.split()[1])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service():
    with FakeService() as svc:
        yield svc


# --- exit 0 / 1 ------------------------------------------------------------------------------------

def test_pass_exits_0_and_writes_reports(service, tmp_path):
    proc = run_cli(service.url, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    assert s["verdict"] == "pass" and s["exit_code"] == 0
    assert s["groups"]["http"]["requests"] > 0 and s["groups"]["http"]["failures"] == 0
    assert s["groups"]["login"]["requests"] >= 6
    assert s["run"]["runner"] == "local"
    for name in ("report.html", "locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv"):
        assert (tmp_path / name).is_file(), name
    # the SLA table is printed
    assert "SLA verdict: PASS (exit code 0)" in proc.stdout
    assert "| threshold" in proc.stdout
    # every simulated user logged in as its own account
    assert sum(e["requests"] for e in s["entries"]) == aggregated_requests(proc.stdout + proc.stderr)


def test_missed_threshold_exits_1(service, tmp_path):
    sla_file = tmp_path / "sla.toml"
    sla_file.write_text('[thresholds]\n"[Auth] Me" = ["p(95)<0.001"]\nhttp = ["avg<500"]\n')
    proc = run_cli(service.url, tmp_path / "r", "--sla-file", str(sla_file))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = summary(tmp_path / "r")
    assert s["verdict"] == "fail"
    failed = [(r["target"], r["metric"]) for r in s["thresholds"] if r["result"] == "FAIL"]
    assert failed == [("[Auth] Me", "p95")]
    assert "SLA verdict: FAIL (exit code 1)" in proc.stdout


@pytest.mark.parametrize("args, env", [
    (["--sla-avg-ms", "0.0001", "--sla", "[Auth] Me: max<0.0001", "--sla", "login: requests>0"], {}),
    ([], {"WORKORDER_LOADTEST_SLA_AVG_MS": "0.0001",  # the suite's options also come from the environment
          "WORKORDER_LOADTEST_SLA": '["[Auth] Me: max<0.0001", "login: requests>0"]'}),
], ids=["flags", "environment"])
def test_threshold_flags_and_environment_exit_1(service, tmp_path, args, env):
    proc = run_cli(service.url, tmp_path, *args, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {(r["target"], r["metric"]): (r["result"], r["source"]) for r in summary(tmp_path)["thresholds"]}
    assert rows[("http", "avg")] == rows[("[Auth] Me", "max")] == ("FAIL", "flag")
    assert rows[("login", "requests")] == ("pass", "flag") and rows[("http", "p95")] == ("pass", "default")


def test_conflicts_are_answers_not_failures(tmp_path):
    with FakeService(conflicts=True) as service:
        # a NotificationUser assigns as its first task: at least one 409 per WebSocket user
        proc = run_cli(service.url, tmp_path, "--ws-users", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    conflicts = [e for e in s["entries"] if e["name"].endswith(" (conflict)")]
    assert conflicts and all(e["conflicts"] == e["requests"] > 0 and e["failures"] == 0 for e in conflicts)
    assert s["groups"]["http"]["conflicts"] == sum(e["conflicts"] for e in conflicts)
    assert s["groups"]["http"]["failures"] == 0 and s["verdict"] == "pass"
    assert "(conflict)" not in (tmp_path / "locust_failures.csv").read_text()  # Locust's report agrees


def test_websocket_user_measures_assignment_to_notification(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--ws-users", "2", "--users", "4", "--run-time", "4s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    ws = {e["name"]: e for e in s["entries"] if e["kind"] == "ws"}
    assert ws["[WS] Connect"]["requests"] == 2 and ws["[WS] Connect"]["failures"] == 0
    latency = ws["[WS] assignment->notification"]
    assert latency["requests"] >= 1 and latency["failures"] == 0 and "[WS] Connection" not in ws
    assert service.state.marked_read == latency["requests"]  # each notification marked read
    # WS entries are kept out of the HTTP aggregate
    http_names = {e["name"] for e in s["entries"] if e["kind"] == "http"}
    assert not any(n.startswith("[WS]") for n in http_names)
    assert s["groups"]["ws"]["requests"] == sum(e["requests"] for e in ws.values())


def test_missing_notifications_fail_the_websocket_thresholds(tmp_path):
    with FakeService(notify=False) as service:
        proc = run_cli(service.url, tmp_path, "--ws-users", "1", "--users", "3", "--run-time", "4s",
                       "--ws-timeout", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = summary(tmp_path)
    latency = next(e for e in s["entries"] if e["name"] == "[WS] assignment->notification")
    assert latency["failures"] == latency["requests"] >= 1
    failed = {(r["target"], r["metric"]) for r in s["thresholds"] if r["result"] == "FAIL"}
    assert ("ws", "error_rate") in failed and not any(t == "http" for t, _ in failed)


def test_processes_run_gates_on_the_master(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--processes", "2", "--users", "8", "--spawn-rate", "8", "--run-time", "4s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    assert s["run"]["runner"] == "master" and s["run"]["workers"] == 2
    assert s["groups"]["http"]["requests"] > 0
    # the raw samples shipped from the workers cover exactly what Locust's own statistics cover
    assert sum(e["requests"] for e in s["entries"]) == aggregated_requests(proc.stdout + proc.stderr)


# --- exit 2 ----------------------------------------------------------------------------------------

def test_login_rejected_during_the_run_is_invalid_and_stops_early(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--skip-preflight", "--run-time", "30s", password="wrong")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    s = summary(tmp_path)
    assert s["verdict"] == "invalid"
    assert [r for r in s["invalid_reasons"] if r.startswith("setup error: login rejected for")], s["invalid_reasons"]
    assert proc.elapsed < 15  # stopped as soon as the setup error was known, not after 30 s


@pytest.mark.parametrize("args, password, message", [  # the preflight's cases: test_hooks.py
    ([], "wrong", "preflight: login rejected for loadtest-operator-0001 (HTTP 400); seed the accounts with:"),
    (["--sla", "http: p95<fast"], "secret", "invalid SLA configuration: cannot parse threshold"),
    (["--sla-file", "/nonexistent.toml"], "secret", "invalid SLA configuration: cannot read SLA file"),
])
def test_preflight_and_configuration_errors_end_the_run_before_any_user(service, tmp_path, args, password, message):
    proc = run_cli(service.url, tmp_path, *args, password=password)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "summary.json").exists() and service.state.requests <= 6  # logins of the preflight


def test_unreachable_host_exits_2(tmp_path):
    proc = run_cli(f"http://127.0.0.1:{closed_port()}", tmp_path)
    assert proc.returncode == 2
    assert "preflight: host unreachable: POST http://127.0.0.1" in proc.stderr


def test_unreachable_host_without_preflight_is_an_invalid_run(tmp_path):
    proc = run_cli(f"http://127.0.0.1:{closed_port()}", tmp_path, "--skip-preflight")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    s = summary(tmp_path)
    assert s["verdict"] == "invalid" and s["groups"]["login"]["no_response"] == s["groups"]["login"]["requests"] > 0
    assert "host unreachable: no HTTP request got a response" in s["invalid_reasons"]


# --- argument handling (in-process, no Locust run) ------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--host", "https://workorder.acme.com", "--password", "x"], "looks like production"),
    (["--host", "https://prod.acme.io", "--password", "x"], "looks like production"),
    (["--password", "x"], "no host"),
    (["--host", "http://127.0.0.1:9"], "no password"),
    (["--host", "https://workorder.acme.com", "--allow-production"], "no password"),  # past the guard
    (["--host", "http://127.0.0.1:9", "--password", "x", "--users", "0"], "--users"),
])
def test_usage_errors_exit_2(argv, message, capsys, monkeypatch):
    for var in ("WORKORDER_LOADTEST_HOST", "LOCUST_HOST", "WORKORDER_LOADTEST_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--users", "many"])
    assert exc.value.code == 2


def test_locust_command_line(tmp_path):
    args, rest = cli.build_parser().parse_known_args(
        ["--host", "http://127.0.0.1:8000", "--password", "pw", "--sla", "ws: p95<500", "--processes", "2",
         "--reset-stats", "--loglevel", "WARNING"])
    argv = cli.locust_command(args, rest, tmp_path)
    assert argv[:3] == [sys.executable, "-c", cli.LOCUST_BOOTSTRAP] and "run_module('locust'" in cli.LOCUST_BOOTSTRAP
    assert argv[argv.index("-f") + 1] == cli.LOCUSTFILE and argv[argv.index("--host") + 1] == "http://127.0.0.1:8000"
    assert "--headless" in argv and argv[argv.index("--run-time") + 1] == "5m"
    assert argv[argv.index("--users") + 1] == "100" and argv[argv.index("--spawn-rate") + 1] == "10"
    assert argv[argv.index("--sla") + 1] == "ws: p95<500"
    assert argv[argv.index("--processes") + 1] == "2"
    assert argv[-7:] == rest == ["--sla", "ws: p95<500", "--processes", "2", "--reset-stats", "--loglevel", "WARNING"]
    assert "--only-summary" in argv
    assert "pw" not in argv and "--password" not in argv  # the password travels in the environment
    assert argv[argv.index("--summary-file") + 1] == str(tmp_path / "summary.json")
    web = cli.locust_command(cli.build_parser().parse_known_args(["--host", "http://x", "--web"])[0], [], tmp_path)
    assert "--headless" not in web and "--web-host" in web
    args, rest = cli.build_parser().parse_known_args(["--host", "http://x", "--print-stats"])
    assert "--only-summary" not in cli.locust_command(args, rest, tmp_path)


def test_console_script_is_installed():
    beside = Path(sys.executable).with_name("workorder-loadtest")
    script = str(beside) if beside.exists() else shutil.which("workorder-loadtest")
    assert script, "the workorder-loadtest console script is not installed"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("usage: workorder-loadtest", "--report-dir", "--allow-production", "--password",  # its own
                   "--ws-users", "--sla-p95-ms", "WORKORDER_LOADTEST_SLA_FILE", "--skip-preflight",  # the suite's
                   "--reset-stats", "--stop-timeout"):  # Locust's
        assert option in proc.stdout, option


def test_reset_stats_drops_the_ramp_up_like_locust(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--reset-stats", "--spawn-rate", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    assert s["run"]["samples_since"] > s["run"]["started_at"]
    assert sum(e["requests"] for e in s["entries"]) == aggregated_requests(proc.stdout + proc.stderr)


def test_settle_time_moves_the_reset_past_the_last_users_logins(service, tmp_path):
    # 10 s measured: every user's think time (at most 10 s) has ended at least once in it
    settled = run_cli(service.url, tmp_path / "settled", "--reset-stats", "--settle-time", "2", "--run-time", "12s")
    assert settled.returncode == 0, settled.stdout + settled.stderr
    s = summary(tmp_path / "settled")
    since = dt.datetime.fromisoformat(s["run"]["samples_since"])
    assert since - dt.datetime.fromisoformat(s["run"]["started_at"]) >= dt.timedelta(seconds=2)  # without: ~1 s
    assert sum(e["requests"] for e in s["entries"]) == aggregated_requests(settled.stdout + settled.stderr)


def test_writes_carry_fresh_keys_and_a_503_is_retried_once_with_the_same_key(tmp_path):
    with FakeService(unavailable_every=1) as service:  # every write's first attempt: 503
        # a WebSocket user assigns a task as its first task: writes are certain
        proc = run_cli(service.url, tmp_path, "--ws-users", "2", "--users", "8", "--run-time", "4s")
        state = service.state
    s = summary(tmp_path)
    assert state.unkeyed_writes == 0 and state.keyed_writes > 0  # every write had a key of its own
    assert state.unavailable > 0
    retries = [e for e in s["entries"] if e["name"].endswith(" (retry)")]
    # the first attempt is a failure in http's error rate; its retry is reported apart, and succeeded
    assert s["groups"]["http"]["failures"] == state.unavailable
    assert s["groups"]["retry"]["requests"] == sum(e["requests"] for e in retries) == state.unavailable
    assert s["groups"]["retry"]["failures"] == 0 and all(e["kind"] == "retry" for e in retries)
    assert s["verdict"] == "fail" and proc.returncode == 1  # every write failed once: far above 0.1 %
    assert "retry requests=" in proc.stdout
