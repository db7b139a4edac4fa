"""The application servers as real processes: gunicorn (WSGI) and daphne (ASGI, `workorder-daphne`).

Both are started exactly as production starts them (same command line, configuration only from the
environment), used by backend/tests/test_runtime_*.py and by the production-stack test:

    gunicorn = GunicornServer(env, base_dir, port=free_port(), unix_socket=True, workers=2).start()
    daphne = DaphneServer(env, base_dir, port=free_port()).start()
    ...
    gunicorn.worker_pids()      # kill -9 one of them in a fault test
    gunicorn.stop()             # SIGTERM to the master (graceful), SIGKILL to leftovers after a timeout

`env` is the complete environment of the child (DATABASE_URL, REDIS_URL, DJANGO_SECRET_KEY, ...); the
launcher only adds the bind variables, PROMETHEUS_MULTIPROC_DIR and PATH.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from .process import ManagedProcess

GUNICORN_APP = "workorder.wsgi:application"
GUNICORN_CONFIG = "python:workorder.gunicorn_conf"


def _venv_bin(name: str) -> str | None:
    """The console script next to the running interpreter (the .venv or Nix env), else PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def gunicorn_argv() -> list[str]:
    script = _venv_bin("gunicorn")
    base = [script] if script else [sys.executable, "-m", "gunicorn"]
    return [*base, "-c", GUNICORN_CONFIG, GUNICORN_APP]


def daphne_argv(extra: list[str] | None = None) -> list[str]:
    script = _venv_bin("workorder-daphne")
    base = [script] if script else [sys.executable, "-m", "workorder.daphne_main"]
    return [*base, *(extra or [])]


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (what nginx does to reach gunicorn)."""

    def __init__(self, path: str, timeout: float = 10.0):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


class _AppServer:
    name = "app"

    def __init__(self, env: dict[str, str], base_dir: str | Path | None = None, *, port: int | None = None,
                 unix_socket: bool = False, host: str = "127.0.0.1"):
        self.base = Path(base_dir or tempfile.mkdtemp(prefix=f"wo-{self.name}-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.host = host
        self.port = port
        self.socket_path: Path | None = (self.base / f"{self.name}.sock") if unix_socket else None
        if self.port is None and self.socket_path is None:
            raise ValueError("give a port, unix_socket=True, or both")
        self.log_path = self.base / f"{self.name}.log"
        self.process: ManagedProcess | None = None

    # -- addresses ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        if self.port is not None:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return UnixHTTPConnection(str(self.socket_path), timeout=timeout)

    def request(self, method: str, path: str, *, headers: dict | None = None, body=None,
                timeout: float = 10.0) -> tuple[int, dict, bytes]:
        """One request on a fresh connection: (status, headers, body). JSON bodies for dict/list."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        env = dict(self.env)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH") or os.environ.get("PATH", "")])
        return env

    def start(self, timeout: float = 60.0) -> _AppServer:
        self.process = ManagedProcess(self.name, self.argv(), log_path=self.log_path, env=self.child_env(),
                                      stop_timeout=30.0).start()
        self.process.wait_until(self.is_ready, timeout=timeout)
        return self

    def is_ready(self) -> bool:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (graceful) to the process group; SIGKILL after `timeout`. Returns the exit status."""
        if self.process is None:
            return None
        return self.process.stop(timeout)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        """Signal only the main process (gunicorn master / daphne), as systemd's KillMode=mixed does."""
        if self.process is not None and self.process.alive():
            os.kill(self.process.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.process is not None and self.process.process is not None
        return self.process.process.wait(timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class GunicornServer(_AppServer):
    """`gunicorn -c python:workorder.gunicorn_conf workorder.wsgi:application` with GUNICORN_* env."""

    name = "gunicorn"

    def __init__(self, env: dict[str, str], base_dir: str | Path | None = None, *, port: int | None = None,
                 unix_socket: bool = False, workers: int = 2, worker_class: str | None = None,
                 threads: int | None = None, host: str = "127.0.0.1", extra_env: dict[str, str] | None = None):
        super().__init__(env, base_dir, port=port, unix_socket=unix_socket, host=host)
        self.workers = workers
        self.metrics_dir = self.base / "prometheus"
        self.env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(self.metrics_dir))
        self.env["GUNICORN_WORKERS"] = str(workers)
        if worker_class:
            self.env["GUNICORN_WORKER_CLASS"] = worker_class
        if threads:
            self.env["GUNICORN_THREADS"] = str(threads)
        binds = []
        if self.socket_path is not None:
            binds.append(f"unix:{self.socket_path}")
        if self.port is not None:
            binds.append(f"{host}:{self.port}")
        self.env["GUNICORN_BIND"] = ",".join(binds)
        self.env.update(extra_env or {})

    def argv(self) -> list[str]:
        return gunicorn_argv()

    def worker_pids(self) -> list[int]:
        """The live worker processes of the master (children of its pid)."""
        if self.process is None or not self.process.alive():
            return []
        try:
            import psutil

            return sorted(child.pid for child in psutil.Process(self.process.pid).children())
        except Exception:  # noqa: BLE001 - psutil missing or the master just exited
            return []

    def is_ready(self) -> bool:
        if len(self.worker_pids()) < self.workers:
            return False
        status, _, _ = self.request("GET", "/health/", timeout=5)
        return status == 200

    def wait_workers(self, count: int | None = None, timeout: float = 60.0) -> list[int]:
        """Wait until `count` (default: all) workers run and answer, e.g. after killing one."""
        count = self.workers if count is None else count
        assert self.process is not None
        self.process.wait_until(lambda: len(self.worker_pids()) >= count, timeout=timeout, what="workers up")
        self.process.wait_until(lambda: self.request("GET", "/health/", timeout=5)[0] == 200, timeout=timeout)
        return self.worker_pids()


class DaphneServer(_AppServer):
    """`workorder-daphne` with DAPHNE_BIND (a loopback port or a unix socket, not both)."""

    name = "daphne"

    def __init__(self, env: dict[str, str], base_dir: str | Path | None = None, *, port: int | None = None,
                 unix_socket: bool = False, host: str = "127.0.0.1", extra_args: list[str] | None = None):
        if port is not None and unix_socket:
            raise ValueError("daphne binds one address: a port or a unix socket")
        super().__init__(env, base_dir, port=port, unix_socket=unix_socket, host=host)
        self.extra_args = list(extra_args or [])
        self.env["DAPHNE_BIND"] = f"unix:{self.socket_path}" if self.socket_path else f"{host}:{self.port}"

    def argv(self) -> list[str]:
        return daphne_argv(self.extra_args)

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def is_ready(self) -> bool:
        """An HTTP answer, not only a connect: daphne listens before Twisted's reactor runs and installs
        its signal handlers, and a SIGTERM in between would kill it with the signal's default action."""
        self.request("GET", "/health/", timeout=1)  # any status: an HTTP answer is what counts
        return True


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} not met after {timeout}s (last value {last!r})")
