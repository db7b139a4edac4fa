"""workorder-loadtest's arguments and exit codes, end to end against a fake service on loopback.

Each run is bounded to a few seconds of Locust run time; the fake service (fake_service.py) speaks
issue 2's API, including the WebSocket push of assignment notifications.
"""

from __future__ import annotations

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


def run_cli(host: str, report_dir: Path, *extra: str, password: str = "secret", timeout: float = 90):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKORDER_", "LOCUST_"))}
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


def test_threshold_flags_exit_1(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--sla-avg-ms", "0.0001")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [r["metric"] for r in summary(tmp_path)["thresholds"] if r["result"] == "FAIL"] == ["avg"]


def test_websocket_user_measures_assignment_to_notification(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--ws-users", "2", "--users", "4", "--run-time", "4s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    ws = {e["name"]: e for e in s["entries"] if e["kind"] == "ws"}
    assert ws["[WS] Connect"]["requests"] == 2 and ws["[WS] Connect"]["failures"] == 0
    latency = ws["[WS] assignment->notification"]
    assert latency["requests"] >= 1 and latency["failures"] == 0
    assert service.state.notifications >= latency["requests"]
    assert service.state.marked_read >= 1
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
    assert latency["failures"] >= 1
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
    assert any("login rejected" in r for r in s["invalid_reasons"])
    assert proc.elapsed < 25  # stopped as soon as the setup error was known


def test_preflight_rejects_wrong_password_without_running_locust(service, tmp_path):
    proc = run_cli(service.url, tmp_path, password="wrong")
    assert proc.returncode == 2
    assert "login rejected" in proc.stderr and "seed_loadtest" in proc.stderr
    assert not (tmp_path / "summary.json").exists()


def test_preflight_detects_missing_seeded_accounts(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--operators", "500")
    assert proc.returncode == 2
    assert "loadtest-operator-0500" in proc.stderr


def test_unreachable_host_exits_2(tmp_path):
    proc = run_cli(f"http://127.0.0.1:{closed_port()}", tmp_path)
    assert proc.returncode == 2
    assert "host unreachable" in proc.stderr


def test_unreachable_host_without_preflight_is_an_invalid_run(tmp_path):
    proc = run_cli(f"http://127.0.0.1:{closed_port()}", tmp_path, "--skip-preflight")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert summary(tmp_path)["verdict"] == "invalid"


# --- argument handling (in-process, no Locust run) ------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--host", "https://workorder.acme.com", "--password", "x"], "looks like production"),
    (["--host", "https://prod.acme.io", "--password", "x"], "looks like production"),
    (["--password", "x"], "no host"),
    (["--host", "http://127.0.0.1:9"], "no password"),
    (["--host", "http://127.0.0.1:9", "--password", "x", "--sla", "http: p95<fast"], "invalid SLA"),
    (["--host", "http://127.0.0.1:9", "--password", "x", "--sla-file", "/nonexistent.toml"], "invalid SLA"),
    (["--host", "http://127.0.0.1:9", "--password", "x", "--users", "0"], "--users"),
])
def test_usage_errors_exit_2(argv, message, capsys, monkeypatch):
    for var in ("WORKORDER_LOADTEST_HOST", "LOCUST_HOST", "WORKORDER_LOADTEST_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_allow_production_passes_the_guard(monkeypatch, capsys):
    monkeypatch.setattr(cli, "preflight", lambda *a, **k: (_ for _ in ()).throw(cli.SetupError("host unreachable: stub")))
    assert cli.main(["--host", "https://workorder.acme.com", "--password", "x", "--allow-production"]) == 2
    assert "host unreachable: stub" in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--users", "many"])
    assert exc.value.code == 2


def test_locust_command_line(tmp_path):
    args, rest = cli.build_parser().parse_known_args(
        ["--host", "http://127.0.0.1:8000", "--password", "pw", "--sla", "ws: p95<500", "--processes", "2",
         "--reset-stats", "--loglevel", "WARNING"])
    argv = cli.locust_command(args, rest, tmp_path)
    assert argv[1:3] == ["-c", cli.LOCUST_BOOTSTRAP] and "run_module('locust'" in cli.LOCUST_BOOTSTRAP
    assert "--headless" in argv and argv[argv.index("--run-time") + 1] == "5m"
    assert argv[argv.index("--users") + 1] == "100" and argv[argv.index("--spawn-rate") + 1] == "10"
    assert argv[argv.index("--sla") + 1] == "ws: p95<500"
    assert argv[argv.index("--processes") + 1] == "2"
    assert argv[-3:] == ["--reset-stats", "--loglevel", "WARNING"]
    assert "pw" not in argv  # the password travels in the environment, not on the command line
    assert argv[argv.index("--summary-file") + 1] == str(tmp_path / "summary.json")
    web = cli.locust_command(cli.build_parser().parse_known_args(["--host", "http://x", "--web"])[0], [], tmp_path)
    assert "--headless" not in web and "--web-host" in web


def test_console_script_is_installed():
    beside = Path(sys.executable).with_name("workorder-loadtest")
    script = str(beside) if beside.exists() else shutil.which("workorder-loadtest")
    assert script, "the workorder-loadtest console script is not installed"
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--report-dir" in proc.stdout


def test_reset_stats_drops_the_ramp_up_like_locust(service, tmp_path):
    proc = run_cli(service.url, tmp_path, "--reset-stats", "--spawn-rate", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = summary(tmp_path)
    assert s["run"]["samples_since"] > s["run"]["started_at"]
    assert sum(e["requests"] for e in s["entries"]) == aggregated_requests(proc.stdout + proc.stderr)
