"""workorder-loadtest --master / --worker: one master and two worker processes over TCP on loopback,
against the fake service; the gate on the master judges the raw samples the workers shipped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from fake_service import FakeService
from test_cli import POOLS, aggregated_requests, closed_port, summary

from workorder_loadtest import cli


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("WORKORDER_", "LOCUST_"))}


def launch(*args: str, password: str | None = None) -> subprocess.Popen:
    env = clean_env() | ({cli.PASSWORD_VARIABLE: password} if password else {})
    return subprocess.Popen([sys.executable, "-m", "workorder_loadtest.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"still running after {timeout}s:\n{output[-3000:]}")
    return proc.returncode, output


def test_master_gates_on_the_samples_of_two_workers_over_tcp(tmp_path):
    port = closed_port()
    with FakeService() as service:
        master = launch("--master", "--expect-workers", "2", "--master-bind-port", str(port), "--host", service.url,
                        "--report-dir", str(tmp_path), "--users", "8", "--spawn-rate", "8", "--run-time", "4s",
                        "--ws-users", "0", *POOLS, password="secret")
        time.sleep(1.0)  # workers retry their connection anyway; this only keeps their logs short
        # Workers need neither the host nor the password: the master sends both with the run.
        workers = [launch("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)) for _ in range(2)]
        code, output = finish(master)
        results = [finish(worker, 30) for worker in workers]
        assert code == 0, output[-4000:]
        assert all(result[0] == 0 for result in results), [r[1][-2000:] for r in results]
        s = summary(tmp_path)
        assert s["run"]["runner"] == "master" and s["run"]["workers"] == 2
        assert s["groups"]["http"]["requests"] > 0 and s["groups"]["login"]["requests"] >= 8
        # Every request was made on a worker; the gate's raw samples cover exactly Locust's statistics.
        assert sum(e["requests"] for e in s["entries"]) == aggregated_requests(output)
        # Every user of both workers logged in (the master sent the password).
        assert service.state.logins >= 8


def test_master_without_its_workers_gives_up_without_a_verdict(tmp_path):
    with FakeService() as service:
        master = launch("--master", "--expect-workers", "1", "--expect-workers-max-wait", "2", "--master-bind-port",
                        str(closed_port()), "--host", service.url, "--report-dir", str(tmp_path), "--run-time", "3s",
                        "--ws-users", "0", *POOLS, password="secret")
        code, output = finish(master, 60)
    assert code == 2, output[-3000:]
    assert "without an SLA verdict" in output and not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--master", "--worker"], "--master and --worker exclude each other"),
    (["--master", "--expect-workers", "0", "--host", "http://127.0.0.1:9"], "--expect-workers must be at least 1"),
])
def test_distributed_flag_errors_exit_2(args, message):
    proc = subprocess.run([sys.executable, "-m", "workorder_loadtest.cli", *args, "--password", "x"], env=clean_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_worker_and_master_command_lines():
    parser = cli.build_parser()
    args, rest = parser.parse_known_args(["--worker", "--master-host", "10.0.0.5", "--master-port", "6000", "-L", "INFO"])
    argv = cli.worker_command(args, rest)
    assert argv[3:] == ["-f", cli.LOCUSTFILE, "--worker", "--master-host", "10.0.0.5", "--master-port", "6000",
                        "-L", "INFO"]
    args, rest = parser.parse_known_args(["--master", "--expect-workers", "3", "--host", "http://127.0.0.1:1"])
    argv = cli.locust_command(args, rest, cli.Path("/tmp/r"))
    at = argv.index("--master")
    assert argv[at:at + 9] == ["--master", "--expect-workers", "3", "--expect-workers-max-wait", "60",
                               "--master-bind-host", "127.0.0.1", "--master-bind-port", "5557"]
