"""Throwaway servers for tests: PostgreSQL and Redis on loopback / unix sockets in a temp directory.

Binaries are looked up on PATH first (Nix dev shell), then in Debian's locations. Every server is
started by the test that needs it and stopped after; nothing listens beyond loopback.
"""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self


class MissingBinary(RuntimeError):
    pass


def find_binary(name: str, extra_globs: tuple[str, ...] = ()) -> str:
    """`name` from PATH, else from Debian locations (e.g. /usr/lib/postgresql/*/bin)."""
    found = shutil.which(name)
    if found:
        return found
    candidates: list[str] = []
    for pattern in extra_globs:
        candidates.extend(sorted(glob.glob(pattern), reverse=True))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise MissingBinary(f"{name} not found on PATH nor in {', '.join(extra_globs) or 'the usual places'}")


def pg_binary(name: str) -> str:
    try:
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        candidate = os.path.join(bindir, name)
        if os.access(candidate, os.X_OK):
            return candidate
    except (OSError, subprocess.CalledProcessError):
        pass
    return find_binary(name, (f"/usr/lib/postgresql/*/bin/{name}",))


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A loopback TCP port nothing listens on, chosen outside the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` comes from the same range as the local ports of outgoing
    connections, so between choosing it and a server binding it, any client connection (to PostgreSQL,
    Redis, a load test) can take it, and the server fails with "Address already in use". Ports below
    the ephemeral range are never used by outgoing connections; random choice keeps parallel runs apart.
    """
    low, high = _ephemeral_range()
    # The largest stretch of unprivileged ports outside the ephemeral range.
    below, above = (10000, low) if low - 10000 >= 65535 - high else (high + 1, 65536)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(below, above)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {below}-{above - 1} after 200 tries")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def _as_root() -> bool:
    return os.geteuid() == 0


class PostgresServer:
    """A private PostgreSQL cluster (initdb in a temp dir) on 127.0.0.1:<free port> and a unix socket.

    PostgreSQL refuses to run as root, so as root the cluster belongs to and runs as `postgres`.
    """

    def __init__(self, base_dir: str | None = None, port: int | None = None):
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="wo-pg-"))
        self.data_dir = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log_file = self.base / "postgres.log"
        self.port = port or free_port()
        self.user = "postgres"

    # -- helpers ------------------------------------------------------------------------------
    def _cmd(self, args: list[str]) -> list[str]:
        if _as_root():
            return ["runuser", "-u", "postgres", "--", *args]
        return args

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self._cmd(args), check=True, capture_output=True, text=True, **kwargs)

    @property
    def env(self) -> dict[str, str]:
        """libpq environment for pg_dump, psql, pg_restore."""
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": self.user}

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{dbname}"

    # -- lifecycle ----------------------------------------------------------------------------
    def init(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if _as_root():
            pw = pwd.getpwnam("postgres")
            for path in (self.base, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run([pg_binary("initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                       "--encoding=UTF8", "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale"])
        return self

    def server_options(self) -> str:
        """postgres -c options: loopback only, no durability (unit tests); see ProductionPostgresServer."""
        return (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=128MB"
        )

    def start(self) -> PostgresServer:
        """Start and wait for the port; free_port() can race with another run, so retry on a new port."""
        if not (self.data_dir / "PG_VERSION").exists():
            self.init()
        for attempt in range(3):
            result = subprocess.run(
                self._cmd([pg_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                           "-o", self.server_options(), "-w", "-t", "60", "start"]),
                capture_output=True, text=True, cwd="/",
            )
            if result.returncode == 0:
                wait_for_port(self.port)
                return self
            try:
                log_tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
            except OSError:
                log_tail = "(no server log)"
            if "already in use" not in log_tail + result.stderr or attempt == 2:
                raise RuntimeError(f"pg_ctl start failed ({result.returncode}): {result.stdout}{result.stderr}\n"
                                   f"{self.log_file}:\n{log_tail}")
            self.port = free_port()
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(self._cmd([pg_binary("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
                           capture_output=True, text=True, cwd="/")

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        result = subprocess.run(
            [pg_binary("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-c", sql],
            env={**os.environ, **self.env}, capture_output=True, text=True, check=True,
        )
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _has_c_utf8() -> bool:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    except OSError:
        return False
    return "c.utf8" in out or "c.utf-8" in out


class RedisServer:
    """A private redis-server on 127.0.0.1:<free port> and a unix socket, without persistence.

    With `password_file` (the NixOS module's services.redis.servers.<name>.requirePassFile) the
    server requires that password: its configuration file gets `requirepass`, as the module's
    ExecStartPre writes it, so the password never appears on a command line."""

    def __init__(self, base_dir: str | None = None, port: int | None = None, maxmemory: str = "256mb",
                 password_file: str | Path | None = None):
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="wo-redis-"))
        self.port = port or free_port()
        self.socket_path = self.base / "redis.sock"
        self.maxmemory = maxmemory
        self.password_file = Path(password_file) if password_file else None
        self.process: subprocess.Popen | None = None

    @property
    def password(self) -> str | None:
        return self.password_file.read_text().strip() if self.password_file else None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, **kwargs):
        """A redis-py client on the unix socket, authenticated when the server requires a password."""
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path), password=self.password, **kwargs)

    def start(self) -> RedisServer:
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"requirepass {self.password}\n" if self.password_file else "")
        with open(self.base / "redis.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [find_binary("redis-server", ("/usr/bin/redis-server", "/usr/sbin/redis-server")), str(config),
                 "--bind", "127.0.0.1", "--port", str(self.port), "--unixsocket", str(self.socket_path),
                 "--unixsocketperm", "770", "--save", "", "--appendonly", "no", "--dir", str(self.base),
                 "--maxmemory", self.maxmemory, "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
