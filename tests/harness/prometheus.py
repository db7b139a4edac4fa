"""Prometheus and its exporters, from Debian packages, on free loopback ports.

The twin of `services.workorder.monitoring.enable` in nix/module.nix: scrape jobs `django`
(gunicorn's loopback TCP listener, path /metrics/), `node` (textfile collector directory holding the
backup tool's workorder_backup.prom), `postgres`, `redis`, `nginx` (stub_status), with the
project's alert rules nix/prometheus/*.rules.yml as `rule_files`. The rendered prometheus.yml is
checked with `promtool check config` (which also checks every rule file) before Prometheus starts.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .process import ManagedProcess
from .services import find_binary, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
RULE_FILES_GLOB = str(REPO_ROOT / "nix" / "prometheus" / "*.rules.yml")

# node_exporter collectors that need the host's systemd/dbus or hardware; off in containers and CI.
NODE_EXPORTER_DISABLED = ("systemd", "hwmon", "dmi", "rapl", "nvme", "infiniband", "fibrechannel")


def _exporter_binary(name: str) -> str:
    return find_binary(f"prometheus-{name}-exporter", (f"/usr/bin/prometheus-{name}-exporter",))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Exporter:
    """One exporter process: `job` is the Prometheus job name that scrapes it."""

    job: str
    argv: list[str]
    port: int
    log_dir: Path
    env: dict[str, str] | None = None
    process: ManagedProcess | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Exporter:
        self.process = ManagedProcess(f"{self.job}-exporter", self.argv, env=self.env,
                                      log_path=self.log_dir / f"{self.job}-exporter.log").start()
        self.process.wait_until(lambda: http_get(f"http://{self.target}/metrics", 2)[0] == 200, timeout,
                                "serving /metrics")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def metrics(self) -> str:
        return http_get(f"http://{self.target}/metrics")[1].decode()


def node_exporter(log_dir: Path, textfile_dir: Path, port: int | None = None) -> Exporter:
    port = port or free_port()
    argv = [_exporter_binary("node"), f"--web.listen-address=127.0.0.1:{port}",
            f"--collector.textfile.directory={textfile_dir}"]
    argv += [f"--no-collector.{name}" for name in NODE_EXPORTER_DISABLED]
    return Exporter("node", argv, port, log_dir)


def postgres_exporter(log_dir: Path, data_source_name: str, port: int | None = None) -> Exporter:
    port = port or free_port()
    argv = [_exporter_binary("postgres"), f"--web.listen-address=127.0.0.1:{port}"]
    return Exporter("postgres", argv, port, log_dir, env={**os.environ, "DATA_SOURCE_NAME": data_source_name})


REDIS_EXPORTER_PASSWORDS = Path(__file__).resolve().parents[2] / "nix" / "scripts" / "redis-exporter-passwords.sh"


def redis_exporter(log_dir: Path, redis_addr: str, port: int | None = None,
                   password_file: Path | None = None) -> Exporter:
    """`redis_addr`: redis://127.0.0.1:<port> (the module's local server: loopback TCP with the
    password) or unix:///path/redis.sock. With `password_file`, the exporter authenticates through
    --redis.password-file, written by the script the NixOS unit's ExecStartPre runs."""
    port = port or free_port()
    argv = [_exporter_binary("redis"), f"--redis.addr={redis_addr}", f"--web.listen-address=127.0.0.1:{port}"]
    if password_file:
        passwords = Path(log_dir) / "redis-exporter-passwords.json"
        subprocess.run(["bash", "-euo", "pipefail", str(REDIS_EXPORTER_PASSWORDS), redis_addr, str(passwords),
                        str(password_file)], check=True, capture_output=True, text=True, timeout=30)
        argv.append(f"--redis.password-file={passwords}")
    return Exporter("redis", argv, port, log_dir)


def nginx_exporter(log_dir: Path, scrape_uri: str, port: int | None = None) -> Exporter:
    port = port or free_port()
    argv = [_exporter_binary("nginx"), f"-nginx.scrape-uri={scrape_uri}", f"-web.listen-address=127.0.0.1:{port}",
            "-nginx.retries=10", "-nginx.retry-interval=1s"]
    return Exporter("nginx", argv, port, log_dir)


MTAIL_PROGRAMS = Path(__file__).resolve().parents[2] / "nix" / "mtail"


def mtail(log_dir: Path, logs: list[Path], port: int | None = None) -> Exporter:
    """mtail with the project's programs (nix/mtail) over `logs`, as the NixOS unit workorder-mtail
    runs it: counts nginx's in-flight-limit refusals from the shed log."""
    port = port or free_port()
    # The NixOS unit's flags: -logtostderr sends its own log to the exporter's log file (there: the journal).
    argv = [find_binary("mtail", ("/usr/bin/mtail",)), "-progs", str(MTAIL_PROGRAMS), "-address", "127.0.0.1",
            "-port", str(port), "-logtostderr"]
    for log in logs:
        argv += ["-logs", str(log)]
    return Exporter("mtail", argv, port, log_dir)


@dataclass
class ScrapeJob:
    name: str
    targets: list[str]
    metrics_path: str = "/metrics"


@dataclass
class PrometheusServer:
    base: Path
    jobs: list[ScrapeJob]
    rule_files: list[str] = field(default_factory=lambda: sorted(glob.glob(RULE_FILES_GLOB)))
    # The module scrapes every 15 s; the stack test uses 5 s so a 60 s run yields enough samples.
    scrape_interval: str = "5s"
    evaluation_interval: str = "5s"
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.base / "prometheus.yml"

    def config(self) -> dict:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": "4s",
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": list(self.rule_files),
            "scrape_configs": [
                {"job_name": job.name, "metrics_path": job.metrics_path,
                 "static_configs": [{"targets": list(job.targets)}]}
                for job in self.jobs
            ],
        }

    def write(self) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "# Rendered by tests/harness/prometheus.py: the stack test's twin of services.workorder.monitoring.\n"
            + yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path

    def check(self) -> str:
        """`promtool check config` (also checks each rule file); raises with promtool's output."""
        self.write()
        result = subprocess.run([find_binary("promtool", ("/usr/bin/promtool",)), "check", "config",
                                 str(self.config_path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"promtool check config failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout + result.stderr

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self.check()
        argv = [find_binary("prometheus", ("/usr/bin/prometheus",)), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.base / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d"]
        self.process = ManagedProcess("prometheus", argv, log_path=self.base / "prometheus.log").start()
        self.process.wait_until(lambda: http_get(f"{self.url}/-/ready", 2)[0] == 200, timeout, "ready")
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    # -- HTTP API -----------------------------------------------------------------------------
    def api(self, path: str, **params) -> dict:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        status, body = http_get(f"{self.url}/api/v1/{path}{query}", timeout=10)
        payload = json.loads(body)
        if status != 200 or payload.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path} {params}: {status} {payload}")
        return payload["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        if not result:
            return None
        return float(result[0]["value"][1])

    def targets(self) -> list[dict]:
        return self.api("targets", state="active")["activeTargets"]

    def rule_groups(self) -> list[dict]:
        return self.api("rules")["groups"]

    def wait_all_targets_up(self, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        targets: list[dict] = []
        while time.monotonic() < deadline:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            time.sleep(1)
        down = [(t["labels"].get("job"), t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets
                if t["health"] != "up"]
        raise TimeoutError(f"Prometheus targets not all up after {timeout}s: {down}")
