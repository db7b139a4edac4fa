"""gunicorn configuration owned by the package, read from the environment.

Run:  gunicorn -c python:workorder.gunicorn_conf workorder.wsgi:application

Every setting comes from a GUNICORN_* variable (documented in docs/runtime.md). There is no
user/group and no log file here on purpose: systemd sets the user, journald collects stderr.

Every public name in this module is a gunicorn setting (helpers start with an underscore). gunicorn
silently ignores names it does not know, so an older gunicorn would drop a setting without a word:
loading this file checks each name against the running gunicorn and exits 2 naming what is missing.
"""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import sys
import tempfile

from workorder.core import env as _env

# --- sockets ----------------------------------------------------------------------------------
# Comma list: "unix:/run/workorder/gunicorn.sock,127.0.0.1:8001" (the socket for nginx, the loopback
# port for Prometheus only).
bind = _env.env_list("GUNICORN_BIND", "127.0.0.1:8000")
umask = 0o007  # the unix socket is rw for the service group (nginx joins it), nobody else

# --- workers ----------------------------------------------------------------------------------
# On the full mix at 1,000 users gthread spent 15-20 % less CPU per request than 2 x CPUs + 1 sync
# workers, at a third to a half of their p95 (alternating runs; sync wins on /api/tasks/ alone), and
# only gthread honours keep-alive from nginx's upstream pool. At that step CPUs + 1
# workers of 2 threads shed fewer requests and spent less CPU per request than 2 x CPUs + 1 of 2.
# nginx reuses the upstream connection freed last, so most requests ride a few connections held by one
# or two workers; with 2 threads a request often waited there for a thread while another worker sat
# idle. At 700 users 6.3-14.1 % of the requests waited over 10 ms before Django with 2 threads, 0.4 %
# with 4 at the same host speed (workorder_http_request_queue_seconds; docs/runtime.md, "Workers and
# threads").
_DEFAULT_WORKER_CLASS = "gthread"
with _env.configuration_errors():  # a malformed number: one line and exit 2, before gunicorn starts
    worker_class = _env.env("GUNICORN_WORKER_CLASS", _DEFAULT_WORKER_CLASS)
    workers = _env.env_int("GUNICORN_WORKERS", _env.default_gunicorn_workers())
    threads = _env.env_int("GUNICORN_THREADS", _env.DEFAULT_GUNICORN_THREADS if worker_class == "gthread" else 1)
    timeout = _env.env_int("GUNICORN_TIMEOUT", 30)
    graceful_timeout = _env.env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
    # Must be LONGER than the proxy's idle timeout for upstream connections (nginx: `keepalive_timeout`
    # inside the upstream block, default 60s), so nginx, never gunicorn, closes an idle connection.
    keepalive = _env.env_int("GUNICORN_KEEPALIVE", 75)
    # Workers are not recycled by default (gunicorn's own default). Connections are not shared evenly
    # (the worker that wins accept() most keeps nginx's pooled connections: one served more than half
    # of a 1,000-user benchmark), so a request limit recycles the busiest worker under load: it stops,
    # and its replacement imports Django (~1 s of CPU) and compiles its statements while requests
    # queue; at 1,000 users that was followed by a burst of shed requests. Each recycled worker also
    # leaves its counters' files in PROMETHEUS_MULTIPROC_DIR, which every scrape then reads. Set a
    # limit (with jitter) to contain a memory leak until it is fixed.
    max_requests = _env.env_int("GUNICORN_MAX_REQUESTS", 0)
    max_requests_jitter = _env.env_int("GUNICORN_MAX_REQUESTS_JITTER", 0)
    # Python's thread switch interval in each worker (its default is 5 ms). A worker's threads share one
    # GIL: a thread whose answer from PostgreSQL has arrived waits for another thread to let the GIL
    # go, up to this interval, after every round trip. At 700 users, in alternating runs, 1 ms brought
    # the five busiest endpoints' p99 from 4.4-7.9 (median 5.4) to 3.4-5.5 (median 4.1) times their
    # median latency, at no measurable CPU cost (docs/runtime.md, "Thread switch interval").
    _switch_interval_ms = _env.env_int("GUNICORN_SWITCH_INTERVAL_MS", 1)
    if _switch_interval_ms < 1:
        raise _env.ConfigurationError(f"GUNICORN_SWITCH_INTERVAL_MS must be at least 1, got {_switch_interval_ms}")
    # Each worker moves what it built at start (Django, every view and serializer: ~100,000 objects)
    # and, once more, after its first _REFREEZE_AFTER requests (the caches requests fill: compiled
    # statements, serializer fields) out of the cyclic garbage collector's reach (gc.freeze), so a
    # full collection walks only what later requests left. At 1,000 users full collections paused
    # a worker for up to 145-391 ms without it, 63-128 ms with it (docs/runtime.md, "Garbage collector").
    _gc_freeze = _env.env_bool("GUNICORN_GC_FREEZE", True)
    # Refuse to start when the database lacks migrations this code needs (see _check_migrations).
    _check_migrations_at_start = _env.env_bool("WORKORDER_CHECK_MIGRATIONS_AT_START", True)
# Who may set X-Forwarded-Proto: GUNICORN_FORWARDED_ALLOW_IPS, else the balancers the application
# trusts for X-Real-IP (WORKORDER_TRUSTED_PROXY_NETWORKS: addresses or CIDR networks), else loopback.
# Unix-socket peers are always trusted (only nginx can connect).
forwarded_allow_ips = _env.env("GUNICORN_FORWARDED_ALLOW_IPS",
                               _env.env("WORKORDER_TRUSTED_PROXY_NETWORKS", "127.0.0.1,::1"))
proc_name = "workorder-gunicorn"
preload_app = False  # each worker imports Django itself: no DB connection or metric value is shared by fork
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # heartbeat files on tmpfs, never blocked by a slow disk

# --- logging: everything to stderr, one line per event (journald adds the timestamp) -------------
loglevel = _env.env("LOG_LEVEL", "info").lower()
accesslog = "-"
# %(M)s = request duration in milliseconds; %(U)s is the path WITHOUT the query string (decoded: a
# %0a in the URL is a line break there), so every field is escaped by workorder.gunicorn_logging.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
logger_class = "workorder.gunicorn_logging.EscapingLogger"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "line"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
    },
}

# --- prometheus_client multiprocess mode -------------------------------------------------------
# Every worker writes its metric values to files in PROMETHEUS_MULTIPROC_DIR and /metrics/ sums them.
# The directory must be fresh per start: it is wiped in on_starting (the master, before any worker).
# Unset (a laptop): a private temporary directory, set here in the master before any worker starts
# and before anything imports prometheus_client, which is equivalent to setting it in the shell.
_private_multiproc_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _private_multiproc_dir = tempfile.mkdtemp(prefix="workorder-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _private_multiproc_dir


def _wipe_multiproc_dir(path: str) -> None:
    """Remove the metric files (*.db) of a previous run; nothing else in the directory is touched."""
    os.makedirs(path, exist_ok=True)
    for entry in os.scandir(path):
        if entry.name.endswith(".db") and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def _check_django_settings() -> None:
    """A missing secret key or a bad variable: one line and exit, before any worker is forked."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workorder.settings")
    with _env.configuration_errors():
        from django.conf import settings

        settings.SECRET_KEY  # noqa: B018 - forces the settings module to load


_check_django_settings()  # at configuration load, in the master, before gunicorn even starts


def _check_migrations() -> None:
    """Code that expects a newer schema than the database has must not serve: one line and exit 2.

    Runs in a forked child, so the master stays free of Django's apps, connections and metric
    values (preload_app = False); the child's metrics stay in memory, out of the scrape. A database
    that cannot be reached is no reason to refuse to start (it may come back; /ready/ says so): a
    warning, and gunicorn starts."""
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 complete, 2 migrations missing, 3 database unreachable
        status = 3
        try:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            import django

            with _env.configuration_errors():
                django.setup()
            from django.db import connection

            from workorder.core.migration_state import PendingMigrations, pending_migrations

            try:
                names = pending_migrations(connection)
            except Exception as exc:  # noqa: BLE001 - reported as one line, the parent decides
                print(f"workorder: warning: cannot check the database's migrations at start "
                      f"({_env.one_line(exc)}); /ready/ will report it", file=sys.stderr, flush=True)
            else:
                status = 0
                if names:
                    print(f"workorder: configuration error: {PendingMigrations(names)}", file=sys.stderr,
                          flush=True)
                    status = _env.EXIT_CONFIGURATION
            connection.close()
        except SystemExit as exc:  # configuration_errors() printed its line
            status = exc.code if isinstance(exc.code, int) else _env.EXIT_CONFIGURATION
        except BaseException as exc:  # noqa: BLE001 - the child must never return into gunicorn
            print(f"workorder: warning: migration check failed ({_env.one_line(exc)})", file=sys.stderr, flush=True)
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) == _env.EXIT_CONFIGURATION:
        raise SystemExit(_env.EXIT_CONFIGURATION)


def on_starting(server) -> None:
    _wipe_multiproc_dir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if _check_migrations_at_start:
        _check_migrations()


def post_fork(server, worker) -> None:
    sys.setswitchinterval(_switch_interval_ms / 1000)


_REFREEZE_AFTER = 1000
_requests_served = itertools.count(1)  # next() is atomic: the worker's threads share it


def _freeze_heap() -> None:
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()


def post_worker_init(worker) -> None:
    if _gc_freeze:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 -- imports every view and serializer now, not at the first request
        _freeze_heap()


def post_request(worker, req, environ, resp) -> None:
    if _gc_freeze and next(_requests_served) == _REFREEZE_AFTER:
        _freeze_heap()


def child_exit(server, worker) -> None:
    # Drops the live-gauge files of the dead worker; its counters stay in the sum.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if _private_multiproc_dir:
        shutil.rmtree(_private_multiproc_dir, ignore_errors=True)


def _setting_names() -> set[str]:
    """The names gunicorn reads from this module: everything public that is not a module or a
    `from __future__` feature."""
    return {
        name
        for name, value in globals().items()
        if not name.startswith("_") and not isinstance(value, (type(os), type(annotations)))
    }


def _check_gunicorn_knows_every_setting() -> None:
    try:
        import gunicorn
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:  # imported outside gunicorn without it installed: nothing to check
        return
    unknown = sorted(_setting_names() - {setting.name for setting in KNOWN_SETTINGS})
    if unknown:
        _env.exit_with_configuration_error(f"gunicorn {gunicorn.__version__} does not know the setting(s) "
                                           f"{', '.join(unknown)} of workorder.gunicorn_conf")


_check_gunicorn_knows_every_setting()
