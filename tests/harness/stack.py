"""The whole production topology on one machine, in one temporary directory: `Stack`.

Order of start (each step waits until the previous one answers):
  PostgreSQL (production-like settings, fsync on) -> Redis (unix socket) -> migrate
  -> seed (seed_loadtest + ANALYZE, or a copy of the run's seeded template: tests/harness/seed.py)
  -> collectstatic -> gunicorn (unix socket for nginx + loopback TCP for Prometheus)
  -> daphne (unix socket) -> nginx -> exporters (node, postgres, redis, nginx) -> Prometheus.
stop() runs in reverse order, never raises, and is safe after a failed start(): every server is a
process group killed with SIGTERM then SIGKILL (tests/harness/process.py), PostgreSQL is stopped
with pg_ctl (then its postmaster is killed if it lingers).

The environment given to the Django processes, nginx's layout and the backup command line are
evaluated from nix/deployment.nix, the file nix/module.nix takes them from (see `Stack.app_env`,
tests/harness/deployment.py), starting from an empty environment as systemd does (PATH/HOME/LANG).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from workorder.core.env import default_gunicorn_workers

from . import deployment
from .app import DaphneServer, GunicornServer
from .nginx import NginxConfig, NginxServer
from .process import ManagedProcess
from .progress import Ticker
from .prometheus import (
    Exporter,
    PrometheusServer,
    ScrapeJob,
    mtail,
    nginx_exporter,
    node_exporter,
    postgres_exporter,
    redis_exporter,
)
from .seed import SeedCache, SeedSpec
from .services import PostgresServer, RedisServer, free_port, pg_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent  # the virtualenv's bin: workorder-manage, gunicorn, ...
# The module's own script: the local Redis password (workorder-redis-password.service).
GENERATE_SECRET = REPO_ROOT / "nix" / "scripts" / "generate-secret-key.sh"


def venv_binary(name: str) -> str:
    candidate = BIN_DIR / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is neither in {BIN_DIR} nor on PATH (is the package installed?)")
    return found


class ProductionPostgresServer(PostgresServer):
    """PostgresServer with production durability (fsync, synchronous_commit, full_page_writes ON)
    and memory settings sized for a small server; everything else as in services.py."""

    def __init__(self, *args, durable: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.durable = durable

    def server_options(self) -> str:
        durability = "" if self.durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        return (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
            f"{durability}-c max_connections=200 -c shared_buffers=256MB -c effective_cache_size=1GB "
            "-c work_mem=8MB -c maintenance_work_mem=128MB -c max_wal_size=2GB -c checkpoint_timeout=15min "
            "-c random_page_cost=1.1 -c effective_io_concurrency=100 -c wal_compression=on"
        )

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, mode: str = "fast") -> None:
        pid = self.postmaster_pid()
        super().stop(mode)
        if pid:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.1)
            if _pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class StackOptions:
    # Data: seed_loadtest's account pools and realistic orders/tasks.
    work_orders: int = 20000
    # At least this many tasks: seed_loadtest approves only part of the orders, so the stack tops
    # up the number of work orders until the task count reaches it (0: no minimum).
    min_tasks: int = 0
    operators: int = 200
    supervisors: int = 50
    makers: int = 50
    password: str = field(default_factory=lambda: "lt-" + secrets.token_urlsafe(12))
    seed: bool = True
    # Where the seeded data comes from: None runs seed_loadtest in this stack's database; a SeedCache
    # (tests/harness/seed.py) seeds once per set of the parameters above and this stack starts from a
    # file-level copy of it (the accounts' password becomes the template's).
    seed_cache: SeedCache | None = field(default=None, repr=False, compare=False)
    # Servers. None = the package/module default.
    gunicorn_workers: int | None = None
    gunicorn_extra_env: dict[str, str] = field(default_factory=dict)
    durable_postgres: bool = True
    # nginx rate limit; None: the module's default (nix/deployment.nix). Every Locust user shares
    # 127.0.0.1, so a load test sets a limit it stays under (see docs/performance.md).
    rate_limit: str | None = None
    rate_burst: int | None = None
    # nginx's in-flight limit (services.workorder.nginx.requestsInFlight; 0: none); None: the default.
    requests_in_flight: int | None = None
    nginx_access_log: bool = True
    nginx_timing_log: bool = False  # NginxConfig.timing_log
    nginx_extra_locations: str = ""
    nginx_extra_upstreams: str = ""
    monitoring: bool = True
    scrape_interval: str = "5s"
    server_name: str = "localhost"
    keep_dir: bool = False


class Stack:
    """`with Stack(options) as stack:` or start()/stop(). Attributes hold every server and path."""

    def __init__(self, options: StackOptions | None = None, base_dir: str | Path | None = None, log=print,
                 name: str = "stack"):
        self.options = options or StackOptions()
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="wo-stack-"))
        self.log = log
        self.name = name  # the tag of its log lines
        self.run_dir = self.base / "run"
        self.state_dir = self.base / "state"
        self.static_root = self.state_dir / "static"
        self.media_root = self.state_dir / "media"
        self.backup_dir = self.base / "backups"
        self.textfile_dir = self.base / "node-exporter-textfile"
        self.logs = self.base / "logs"
        self.secret_key_file = self.state_dir / "secret_key"
        # /var/lib/workorder-redis/password (root only) and the units' $CREDENTIALS_DIRECTORY
        # (LoadCredential=redis_password:...): Redis' requirePassFile, the app's REDIS_PASSWORD.
        self.secrets_dir = self.base / "secrets"
        self.redis_password_file = self.secrets_dir / "redis_password"
        self.credentials_dir = self.base / "credentials"
        self.multiproc_dir = self.run_dir / "prometheus-multiproc"
        self.gunicorn_socket = self.run_dir / "gunicorn.sock"
        self.daphne_socket = self.run_dir / "daphne.sock"
        self.gunicorn_metrics_port = free_port()
        self.db_name = "workorder"
        self.db_user = "workorder"
        # services.workorder.backup.user: its own PostgreSQL role (CREATEDB, pg_read_all_data).
        self.backup_db_user = deployment.defaults()["backupUser"]
        self.postgres: ProductionPostgresServer | None = None
        self.redis: RedisServer | None = None
        self.gunicorn: GunicornServer | None = None
        self.daphne: DaphneServer | None = None
        self.nginx: NginxServer | None = None
        self.exporters: list[Exporter] = []
        self.prometheus: PrometheusServer | None = None
        self.extra_processes: list[ManagedProcess] = []
        self.timings: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.seed_template = None  # the SeedTemplate this stack's database was copied from, if any

    # -- configuration shared by every Django process -----------------------------------------
    @property
    def database_url(self) -> str:
        # The module: postgresql:///workorder?host=/run/postgresql (peer auth as the service user).
        return (f"postgresql://{self.db_user}@/{self.db_name}?host={self.postgres.socket_dir}"
                f"&port={self.postgres.port}")

    @property
    def backup_database_url(self) -> str:
        # The module: postgresql:///workorder?host=/run/postgresql&user=workorder-backup (peer auth).
        return (f"postgresql://{self.backup_db_user}@/{self.db_name}?host={self.postgres.socket_dir}"
                f"&port={self.postgres.port}")

    @property
    def redis_exporter_addr(self) -> str:
        # The module: redis://127.0.0.1:<services.workorder.redis.port>, with the password.
        return f"redis://127.0.0.1:{self.redis.port}"

    @property
    def redis_url(self) -> str:
        # The module: unix:///run/redis-workorder/redis.sock?db=0 (services.redis.servers.workorder).
        return f"unix://{self.redis.socket_path}?db=0"

    @property
    def url(self) -> str:
        return self.nginx.url

    def base_env(self) -> dict[str, str]:
        """What systemd gives a unit before Environment=: PATH and locale only (+ HOME for libs)."""
        path = os.pathsep.join([str(BIN_DIR), str(Path(pg_binary("pg_dump")).parent), "/usr/local/bin", "/usr/bin",
                                "/bin", "/usr/sbin", "/sbin"])
        return {"PATH": path, "HOME": str(self.state_dir), "LANG": "C.UTF-8"}

    def deployment_params(self) -> dict:
        """This stack's arguments to nix/deployment.nix (the module passes /var/lib, /run paths)."""
        o = self.options
        return {
            "environment": {
                "stateDir": str(self.state_dir),
                "staticRoot": str(self.static_root),
                "mediaRoot": str(self.media_root),
                "hostName": o.server_name,
                "behindTls": False,
                # The module: postgresql:///workorder?host=/run/postgresql (peer auth as the service user).
                "databaseUrl": self.database_url,
                # The module: unix:///run/redis-workorder/redis.sock?db=0.
                "redisUrl": self.redis_url,
                "gunicornBind": f"unix:{self.gunicorn_socket},127.0.0.1:{self.gunicorn_metrics_port}",
                "daphneBind": f"unix:{self.daphne_socket}",
                # secretKeyFile = null: a key generated once into the state directory.
                "secretKeyFile": str(self.secret_key_file),
            },
            "serverEnvironment": {"multiprocDir": str(self.multiproc_dir)},
            "backupArgs": {
                "directory": str(self.backup_dir),
                "mediaDir": str(self.media_root),
                "metricsFile": str(self.textfile_dir / "workorder_backup.prom"),
            },
        }

    def deployment(self) -> dict:
        return deployment.evaluate(**self.deployment_params())

    def app_env(self) -> dict[str, str]:
        """The `environment` nix/module.nix gives workorder-{migrate,backup} and workorder-manage,
        evaluated from nix/deployment.nix with this stack's paths in place of /var/lib and /run."""
        env = {**self.base_env(), **deployment.without_nulls(self.deployment()["environment"])}
        # LoadCredential=redis_password:... (settings.py puts it into REDIS_URL).
        env["CREDENTIALS_DIRECTORY"] = str(self.credentials_dir)
        if self.options.gunicorn_workers:  # services.workorder.gunicorn.workers (null: the package default)
            env["GUNICORN_WORKERS"] = str(self.options.gunicorn_workers)
        return env

    def server_env(self) -> dict[str, str]:
        """gunicorn and daphne: the environment plus the shared prometheus multiprocess directory."""
        return {**self.app_env(), **self.deployment()["serverEnvironment"]}

    def gunicorn_env(self) -> dict[str, str]:
        return {**self.server_env(), **self.options.gunicorn_extra_env}

    def daphne_env(self) -> dict[str, str]:
        return self.server_env()

    def backup_env(self) -> dict[str, str]:
        """The backup unit: the same environment, but its own database role and no credential."""
        env = self.app_env()
        del env["CREDENTIALS_DIRECTORY"]
        env["DATABASE_URL"] = self.backup_database_url
        return env

    def backup_argv(self) -> list[str]:
        """The NixOS backup unit's ExecStart with the module's defaults (nix/deployment.nix)."""
        return [venv_binary("workorder-backup"), *self.deployment()["backupArgs"]]

    # -- helpers ------------------------------------------------------------------------------
    def _step(self, name: str):
        stack = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.monotonic()
                stack.log(f"[{stack.name}] {name} ...")

            def __exit__(self, *exc):
                stack.timings[name] = round(time.monotonic() - self.t0, 2)
                stack.log(f"[{stack.name}] {name}: {stack.timings[name]:.1f}s{' (failed)' if exc[0] else ''}")

        return _Timer()

    def manage(self, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([venv_binary("workorder-manage"), *args], env=self.app_env(), cwd=str(self.state_dir),
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"workorder-manage {' '.join(args)} exited {result.returncode}:\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def psql(self, sql: str) -> str:
        return self.postgres.psql(sql, dbname=self.db_name)

    def backup(self, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.backup_argv(), env=self.backup_env(), capture_output=True, text=True,
                              timeout=timeout, cwd=str(self.base))

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.log(f"[{self.name}] start failed; stopping what was started")
            self.stop()
            raise
        return self

    def _start(self) -> None:
        o = self.options
        self.start_database()
        with self._step("collectstatic"):
            self.manage("collectstatic", "--noinput")
        with self._step("gunicorn"):
            # tests/harness/app.py launchers: the production command lines, environment from app_env().
            workers = o.gunicorn_workers or default_gunicorn_workers()  # the package default when unset
            self.gunicorn = GunicornServer(self.gunicorn_env(), self.run_dir, port=self.gunicorn_metrics_port,
                                           unix_socket=True, workers=workers)
            self.gunicorn.start(timeout=120)
        with self._step("daphne"):
            self.daphne = DaphneServer(self.daphne_env(), self.run_dir, unix_socket=True)
            self.daphne.start(timeout=60)
        with self._step("nginx"):
            self.nginx = NginxServer(self.base / "nginx", NginxConfig(
                gunicorn_socket=self.gunicorn_socket, daphne_socket=self.daphne_socket,
                static_root=self.static_root, media_root=self.media_root, server_name=o.server_name,
                rate_limit=o.rate_limit, rate_burst=o.rate_burst, requests_in_flight=o.requests_in_flight,
                access_log=o.nginx_access_log, timing_log=o.nginx_timing_log, extra_locations=o.nginx_extra_locations,
                extra_upstreams=o.nginx_extra_upstreams,
            ), port=self.nginx_port)
            self.nginx.start()
        if o.monitoring:
            self.start_monitoring()

    def start_database(self) -> None:
        """PostgreSQL, Redis, migrate and the data: what a seed template (tests/harness/seed.py) and a
        stack share. Call stop() after a failure here too."""
        o = self.options
        for path in (self.run_dir, self.state_dir, self.static_root, self.media_root, self.backup_dir,
                     self.textfile_dir, self.logs, self.secret_key_file.parent, self.multiproc_dir):
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o711)  # PostgreSQL runs as `postgres` when we are root: it must traverse
        self.secret_key_file.write_text(secrets.token_urlsafe(50))
        os.chmod(self.secret_key_file, 0o600)
        for path in (self.secrets_dir, self.credentials_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(["bash", "-euo", "pipefail", str(GENERATE_SECRET), str(self.redis_password_file)],
                       check=True, capture_output=True, text=True, timeout=30)
        shutil.copyfile(self.redis_password_file, self.credentials_dir / "redis_password")
        self.nginx_port = free_port()

        self.postgres = ProductionPostgresServer(str(self.base / "postgresql"), durable=o.durable_postgres)
        cloned = o.seed and o.seed_cache is not None
        if cloned:
            spec = SeedSpec.of(o)
            template = o.seed_cache.template(spec)  # built by the first stack that asks (minutes)
            with self._step("copy of the seeded template cluster"):
                self.postgres.base.mkdir(parents=True, exist_ok=True)
                o.seed_cache.clone_into(spec, self.postgres.data_dir)
            self.seed_template = template
            o.password = template.password
        with self._step("postgresql"):
            self.postgres.init()  # initdb unless the data directory is a copy; socket directory, owner
            self.postgres.start()
            self.ensure_roles()  # also on a copy: postgresql-setup.service runs at every start
        with self._step("redis"):
            self.redis = RedisServer(str(self.base / "redis"), password_file=self.redis_password_file)
            self.redis.start()
            self.configure_redis()
        with self._step("migrate"):
            # The module's workorder-migrate: on a copy nothing to apply, as at every boot of the module.
            self.manage("migrate_locked", "--noinput")
        if cloned:
            self.counts = self.count_rows()
            self.log(f"[{self.name}] seeded (copy of the run's template): {self.counts}")
        elif o.seed:
            self.seed()

    def ensure_roles(self) -> None:
        """What the module's services.postgresql.ensureUsers/ensureDatabases and
        workorder-backup-grants.service do at every start: the application's role without CREATEDB
        (`ALTER ROLE ... NOCREATEDB`, which also fixes a cluster made by an older version), owning
        its database; the backup role with CREATEDB and the grants of nix/deployment.nix."""
        pg = self.postgres
        for role, createdb in ((self.db_user, False), (self.backup_db_user, True)):
            if not pg.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):
                pg.psql(f'CREATE USER "{role}"')
            pg.psql(f'ALTER ROLE "{role}" {"CREATEDB" if createdb else "NOCREATEDB"}')
        if not pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.db_name}'"):
            pg.psql(f'CREATE DATABASE "{self.db_name}"')
        pg.psql(f'ALTER DATABASE "{self.db_name}" OWNER TO "{self.db_user}"')
        for statement in deployment.evaluate(backupRoleGrants=self.backup_db_user)["backupRoleGrants"]:
            pg.psql(statement)

    def configure_redis(self) -> None:
        """services.redis.servers.workorder.settings (the module): evict keys with a TTL first."""
        self.redis.client().config_set("maxmemory-policy", "volatile-lru")

    def count_rows(self) -> dict[str, int]:
        return {
            "work_orders": int(self.psql("SELECT count(*) FROM production_workorder")),
            "tasks": int(self.psql("SELECT count(*) FROM production_task")),
            "users": int(self.psql("SELECT count(*) FROM accounts_user")),
        }

    def _seed_progress(self) -> str:
        counts = self.count_rows()
        return f"{counts['work_orders']} work orders, {counts['tasks']} tasks in the database so far"

    def seed(self) -> None:
        o = self.options
        work_orders = o.work_orders
        for _attempt in range(4):
            with self._step(f"seed_loadtest ({work_orders} work orders)"):
                args = ["seed_loadtest", "--operators", str(o.operators), "--supervisors", str(o.supervisors),
                        "--makers", str(o.makers), "--password", o.password, "--force"]
                if work_orders:
                    args += ["--work-orders", str(work_orders)]
                with Ticker(10, self._seed_progress, prefix=f"[{self.name}] seeding", log=self.log):
                    result = self.manage(*args, timeout=1800)
                self.log(result.stdout.strip()[-2000:])
            tasks = int(self.psql("SELECT count(*) FROM production_task"))
            if not o.min_tasks or tasks >= o.min_tasks or not work_orders:
                break
            # seed_loadtest --work-orders N means "at least N": ask for proportionally more.
            work_orders = int(work_orders * o.min_tasks / max(tasks, 1) * 1.05) + 1
        with self._step("ANALYZE"):
            self.psql("ANALYZE")
        self.counts = self.count_rows()
        self.log(f"[{self.name}] seeded: {self.counts}")

    def reload_nginx(self, timeout: float = 30) -> None:
        """Re-render nginx's config from `self.nginx.config`, SIGHUP the master, and return once
        the reload took effect: every worker that served the old config has exited (nginx starts
        new workers with the new config, the old ones finish their requests and go)."""
        import psutil

        master = psutil.Process(self.nginx.process.pid)
        old = {child.pid for child in master.children()}
        self.nginx.reload()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.nginx.process.check_alive()
            current = {child.pid for child in master.children()}
            if current and not current & old:
                return
            time.sleep(0.05)
        raise TimeoutError(f"nginx reload not done after {timeout}s: old workers {old}, now {current}; "
                           f"{self.nginx.process.log_tail()}")

    def start_monitoring(self) -> None:
        with self._step("exporters"):
            self.exporters = [
                node_exporter(self.logs, self.textfile_dir),
                postgres_exporter(self.logs, f"user=postgres host={self.postgres.socket_dir} "
                                             f"port={self.postgres.port} dbname=postgres sslmode=disable"),
                redis_exporter(self.logs, self.redis_exporter_addr, password_file=self.redis_password_file),
                nginx_exporter(self.logs, self.nginx.status_url),
                mtail(self.logs, [self.nginx.config.shed_log]),
            ]
            for exporter in self.exporters:
                exporter.start()
        with self._step("prometheus"):
            jobs = [ScrapeJob("django", [f"127.0.0.1:{self.gunicorn_metrics_port}"], "/metrics/")]
            jobs += [ScrapeJob(e.job, [e.target]) for e in self.exporters]
            self.prometheus = PrometheusServer(self.base / "prometheus", jobs,
                                               scrape_interval=self.options.scrape_interval,
                                               evaluation_interval=self.options.scrape_interval)
            self.prometheus.start()

    def stop(self) -> None:
        """Reverse order; never raises; leaves no process behind."""
        steps = [("prometheus", lambda: self.prometheus and self.prometheus.stop())]
        steps += [(f"{e.job}-exporter", e.stop) for e in reversed(self.exporters)]
        steps += [(p.name, p.stop) for p in reversed(self.extra_processes)]
        steps += [("nginx", lambda: self.nginx and self.nginx.stop()),
                  ("daphne", lambda: self.daphne and self.daphne.stop()),
                  ("gunicorn", lambda: self.gunicorn and self.gunicorn.stop()),
                  ("redis", lambda: self.redis and self.redis.stop()),
                  ("postgresql", lambda: self.postgres and self.postgres.stop("fast"))]
        for name, action in steps:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                self.log(f"[{self.name}] stopping {name} failed: {exc!r}")

    def collect_logs(self, dest: Path) -> list[Path]:
        """Copy every server's log (and the rendered configs) to `dest`, e.g. for CI artifacts."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        copied = []
        patterns = ("run/*.log", "logs/*.log", "nginx/*.log", "nginx/nginx.conf", "prometheus/prometheus.yml",
                    "prometheus/*.log", "redis/*.log", "postgresql/*.log")
        for pattern in patterns:
            for path in self.base.glob(pattern):
                target = dest / f"{path.parent.name}-{path.name}"
                try:
                    shutil.copyfile(path, target)
                    copied.append(target)
                except OSError:
                    pass
        return copied

    def cleanup(self) -> None:
        self.stop()
        if not self.options.keep_dir:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- observation --------------------------------------------------------------------------
    def server_pids(self) -> dict[str, list[int]]:
        """Root pids of each server (children are found through psutil), for CPU accounting."""
        pids: dict[str, list[int]] = {}
        for name, proc in (("gunicorn", self.gunicorn), ("daphne", self.daphne),
                           ("nginx", self.nginx and self.nginx.process)):
            if proc and proc.pid:
                pids[name] = [proc.pid]
        for proc in self.extra_processes:
            if proc.pid:
                pids[proc.name] = [proc.pid]
        if self.postgres and self.postgres.postmaster_pid():
            pids["postgresql"] = [self.postgres.postmaster_pid()]
        if self.redis and self.redis.process:
            pids["redis"] = [self.redis.process.pid]
        return pids

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get_metrics(self, timeout: float = 10) -> tuple[int, bytes]:
        """gunicorn's /metrics/ on its loopback port (summed over workers), as Prometheus scrapes it."""
        url = f"http://127.0.0.1:{self.gunicorn_metrics_port}/metrics/"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    # -- the Locust suite (workorder-loadtest, loadtest/) -----------------------------------------
    def loadtest_account_args(self) -> list[str]:
        """The seeded account pool, as workorder-loadtest's flags (loadtest/workorder_loadtest/options.py)."""
        o = self.options
        return ["--operators", str(o.operators), "--supervisors", str(o.supervisors), "--makers", str(o.makers)]

    def loadtest_env(self) -> dict[str, str]:
        # The password travels in the environment (workorder-loadtest reads it), not in logged argv.
        return {"WORKORDER_LOADTEST_PASSWORD": self.options.password}

    @staticmethod
    def loadtest_summary(report_dir: Path) -> dict:
        """summary.json (SLA verdict, exact per-group statistics) of the last run in report_dir."""
        path = Path(report_dir) / "summary.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def websocket_failures(summary: dict) -> int | None:
        ws = (summary.get("groups") or {}).get("ws")
        return None if ws is None else int(ws.get("failures", 0)) + int(ws.get("no_response", 0) or 0)

    def login(self, username: str, password: str | None = None) -> str:
        body = json.dumps({"username": username, "password": password or self.options.password}).encode()
        request = urllib.request.Request(self.url + "/api/auth/login/", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.loads(response.read())["token"]


def _unix_socket_accepts(path: Path) -> bool:
    import socket

    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False
