"""gunicorn and daphne as real processes: metrics over several workers, /metrics/ access control,
graceful SIGTERM, a killed worker, startup errors as one line, `check --deploy`, daphne's bind rules."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.app import DaphneServer, GunicornServer, daphne_argv, gunicorn_argv, wait_for
from harness.services import RedisServer, free_port
from tests.runtime_support import SECRET_KEY, create_database, manage, script, server_env

pytestmark = pytest.mark.services

METRICS_TOKEN = "scrape-token-0123456789abcdef"


@pytest.fixture(scope="module")
def database(postgres_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("servers")
    url = create_database(postgres_server)
    manage(server_env(tmp, url), "migrate", "--noinput")
    return url


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def restricted_gunicorn(database, redis, tmp_path_factory):
    """2 workers; /metrics/ allowed only from 10.0.0.0/8 (not us) or with the bearer token from a file."""
    tmp = tmp_path_factory.mktemp("restricted")
    token_file = tmp / "metrics-token"
    token_file.write_text(METRICS_TOKEN + "\n")
    env = server_env(tmp, database, redis.url(), WORKORDER_METRICS_ALLOWED_NETWORKS="10.0.0.0/8",
                     WORKORDER_METRICS_TOKEN_FILE=token_file)
    server = GunicornServer(env, tmp / "gunicorn", port=free_port(), workers=2).start()
    yield server
    server.stop()


def scrape(server: GunicornServer) -> str:
    status, _, body = server.request("GET", "/metrics/", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert status == 200, body[:500]
    return body.decode()


def sample(text: str, name: str, **labels) -> float | None:
    """The value of one sample in Prometheus text format (labels must match exactly those given)."""
    total = None
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        metric, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', metric[len(name):]))
        if all(found.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(value)
    return total


# --- /metrics/ ---------------------------------------------------------------------------------
def test_metrics_refused_without_token_from_a_network_not_allowed(restricted_gunicorn):
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Token {METRICS_TOKEN}"},
                    {"X-Forwarded-For": "10.1.2.3"}):
        status, _, body = restricted_gunicorn.request("GET", "/metrics/", headers=headers)
        assert status == 403, (headers, body[:200])
    assert "django_http" in scrape(restricted_gunicorn)


def test_metrics_allowed_from_loopback_by_default(database, redis, tmp_path):
    env = server_env(tmp_path, database, redis.url())
    with GunicornServer(env, tmp_path / "g", unix_socket=True, port=free_port(), workers=1) as server:
        status, _, body = server.request("GET", "/metrics/")
        assert status == 200 and b"workorder_open_work_orders" in body
        # over the unix socket (nginx's way in) there is no peer address: refused without the token
        server.port = None
        assert server.request("GET", "/metrics/")[0] == 403


# --- /ready/ and the access log ---------------------------------------------------------------------
def test_ready_reuses_pooled_redis_connections(restricted_gunicorn, redis):
    """40 probes over 2 workers x 2 threads: at most one Redis connection per thread is opened, not one
    per probe."""
    import redis as redis_py

    observer = redis_py.Redis.from_url(redis.url())
    assert restricted_gunicorn.request("GET", "/ready/")[0] == 200  # warm: the pools exist
    before = observer.info("stats")["total_connections_received"]
    for _ in range(40):
        status, _, body = restricted_gunicorn.request("GET", "/ready/")
        assert status == 200 and json.loads(body)["checks"]["redis"] == "ok"
    opened = observer.info("stats")["total_connections_received"] - before
    observer.close()
    assert opened <= 4, f"{opened} Redis connections opened by 40 /ready/ probes"


@pytest.mark.parametrize("value, logged", [
    ("/api/tasks/", "/api/tasks/"),
    ("python-requests/2.32 [x] {y} ~", "python-requests/2.32 [x] {y} ~"),
    ('a"b\\c', "a\\x22b\\x5cc"),
    ("a\nb\tc\x7f", "a\\x0ab\\x09c\\x7f"),
    ("caf\u00e9 \u202e\u2028", "caf\u00e9 \\u202e\\u2028"),
])
def test_access_log_fields_are_escaped_where_the_format_reads_them(value, logged):
    from workorder.gunicorn_logging import EscapedAtoms

    atoms = EscapedAtoms({"U": value, "B": 12, "{user-agent}i": value})
    assert atoms["U"] == atoms["{User-Agent}i"] == logged
    assert atoms["B"] == 12 and atoms["q"] == "-"


def test_access_log_escapes_decoded_control_characters(restricted_gunicorn):
    """%0a in a path is a line break in the decoded path gunicorn logs: it must not start a line."""
    forged = "/api/x%0aINFO%20gunicorn.access%20127.0.0.1%20forged%0d%1b[31m%e2%80%ae%22"
    status, _, _ = restricted_gunicorn.request("GET", forged)
    assert status == 404

    def access_line():
        return next((line for line in restricted_gunicorn.log_text().splitlines()
                     if line.startswith("INFO gunicorn.access") and "forged" in line), None)

    wait_for(access_line, timeout=10, what="the access log line of the forged request")
    line, log = access_line(), restricted_gunicorn.log_text()
    assert not any(line.startswith("INFO gunicorn.access 127.0.0.1 forged") for line in log.splitlines())
    assert "\x1b" not in log and "\r" not in log and "\u202e" not in log
    assert '"GET /api/x\\x0aINFO gunicorn.access 127.0.0.1 forged\\x0d\\x1b[31m' in line, line
    assert '\\u202e\\x22 HTTP/1.1" 404 ' in line, line  # a right-to-left override, the quote


def test_counters_sum_over_all_workers(restricted_gunicorn):
    """N requests spread over 2 workers: every scrape, whichever worker answers it, shows N."""
    name = "django_http_responses_total_by_status_total"
    before = sample(scrape(restricted_gunicorn), name, status="404") or 0.0
    n = 40

    def hit(i):
        return restricted_gunicorn.request("GET", f"/no-such-page-{i}/")[0]

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(hit, range(n))) == {404}
    values = {sample(scrape(restricted_gunicorn), name, status="404") for _ in range(8)}
    assert values == {before + n}
    # both workers served some of them: one counter file per worker pid in the multiprocess dir
    pids = {f.name.split("_")[1].split(".")[0] for f in restricted_gunicorn.metrics_dir.glob("counter_*.db")}
    assert len(pids & {str(p) for p in restricted_gunicorn.worker_pids()}) == 2


def test_killed_worker_is_replaced_and_its_counts_are_kept(restricted_gunicorn):
    name = "django_http_responses_total_by_status_total"
    for i in range(10):
        restricted_gunicorn.request("GET", f"/gone-{i}/")
    before = sample(scrape(restricted_gunicorn), name, status="404")
    victim = restricted_gunicorn.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in restricted_gunicorn.worker_pids()
             and len(restricted_gunicorn.worker_pids()) == 2, timeout=30, what="worker respawned")
    restricted_gunicorn.wait_workers()
    assert sample(scrape(restricted_gunicorn), name, status="404") == before


# --- graceful shutdown -----------------------------------------------------------------------
def accepted_connections(server_port: int, client_ports: set[int]) -> int:
    """Connections from `client_ports` to `server_port` that the server has accept()ed. In
    /proc/net/tcp a connection still waiting in the listen queue has no socket inode yet."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port, remote_port = (int(address.rsplit(":", 1)[1], 16) for address in fields[1:3])
            if local_port == server_port and remote_port in client_ports and fields[9] != "0":
                count += 1
    return count


def test_gunicorn_sigterm_lets_in_flight_requests_finish(database, redis, tmp_path):
    env = server_env(tmp_path, database, redis.url(), GUNICORN_GRACEFUL_TIMEOUT=20)
    server = GunicornServer(env, tmp_path / "g", port=free_port(), workers=2).start()
    try:
        body = json.dumps({"username": "nobody", "password": "wrong-password"}).encode()
        clients = []
        for _ in range(3):  # requests that are in flight: headers and half the body sent
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
            sock.sendall(b"POST /api/auth/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:10])
            clients.append(sock)
        ports = {sock.getsockname()[1] for sock in clients}
        wait_for(lambda: accepted_connections(server.port, ports) == 3, timeout=10,
                 what="the 3 connections accepted by the workers")
        server.signal(signal.SIGTERM)  # the master only, like systemd
        wait_for(lambda: "Handling signal: term" in server.log_text(), timeout=10, what="gunicorn handling SIGTERM")
        assert server.process.alive(), "gunicorn must wait for in-flight requests"
        for sock in clients:
            sock.sendall(body[10:])
        for sock in clients:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
            assert data.startswith(b"HTTP/1.1 400 "), data[:200]  # a complete answer, not a reset
        assert server.wait_exit(30) == 0
        assert "Shutting down" in server.log_text() or "Handling signal: term" in server.log_text()
    finally:
        server.stop()


def test_daphne_sigterm_exits_cleanly(database, redis, tmp_path):
    env = server_env(tmp_path, database, redis.url())
    server = DaphneServer(env, tmp_path / "d", unix_socket=True).start()
    try:
        assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o660
        server.signal(signal.SIGTERM)
        assert server.wait_exit(20) == 0
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


# --- configuration errors: one line, non-zero exit -----------------------------------------------
def _without_secret(tmp_path, **extra):
    env = server_env(tmp_path, None, None, **extra)
    del env["DJANGO_SECRET_KEY"]
    return env


@pytest.mark.parametrize("program", ["manage", "gunicorn", "daphne", "wsgi", "asgi"])
def test_missing_secret_key_is_one_line_and_exit(tmp_path, program):
    env = _without_secret(tmp_path, GUNICORN_BIND=f"127.0.0.1:{free_port()}", DAPHNE_BIND=f"127.0.0.1:{free_port()}")
    argv = {
        "manage": [script("workorder-manage"), "check"],
        "gunicorn": gunicorn_argv(),
        "daphne": daphne_argv(),
        "wsgi": [script("python"), "-c", "import workorder.wsgi"],
        "asgi": [script("python"), "-c", "import workorder.asgi"],
    }[program]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode != 0
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert lines == [("workorder: configuration error: DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set; "
                      "it is required unless DJANGO_DEBUG=1")], lines


@pytest.mark.parametrize("bind", ["0.0.0.0:8002", "192.0.2.1:8002", "example.com:8002", "[::]:8002", "relative.sock"])
def test_daphne_refuses_non_loopback_binds_without_trusted_proxies(tmp_path, bind):
    env = server_env(tmp_path, None, None, DAPHNE_BIND=bind)
    result = subprocess.run(daphne_argv(), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("workorder: configuration error: DAPHNE_BIND=")
    assert len(result.stderr.strip().splitlines()) == 1


def test_daphne_bind_arguments():
    from workorder.daphne_main import bind_args, build_argv, strip_query

    assert bind_args("unix:/run/workorder/daphne.sock") == ["-e", "unix:/run/workorder/daphne.sock:mode=660"]
    assert bind_args("unix:/run/a:b.sock") == ["-e", "unix:/run/a\\:b.sock:mode=660"]
    assert bind_args("127.0.0.1:8002") == ["-b", "127.0.0.1", "-p", "8002"]
    assert bind_args("[::1]:8002") == ["-b", "::1", "-p", "8002"]
    # a node behind a balancer: any address, once the balancers are named
    trusted = {"WORKORDER_TRUSTED_PROXY_NETWORKS": "10.0.0.5/32"}
    assert bind_args("10.0.0.7:8002", trusted) == ["-b", "10.0.0.7", "-p", "8002"]
    assert bind_args("0.0.0.0:8002", trusted) == ["-b", "0.0.0.0", "-p", "8002"]
    argv = build_argv(["--ping-interval", "5"], environ={"DAPHNE_BIND": "127.0.0.1:9"})
    # daphne's --proxy-headers believes any peer: the application's rule sets the client instead
    # (core/client_address.py, ClientAddressMiddleware and daphne_main's server class)
    assert argv[-1] == "workorder.asgi:application" and "--proxy-headers" not in argv
    assert argv.index("5") > argv.index("20")  # extra arguments come after (and win over) the defaults
    assert strip_query("/ws/notifications/?token=abc") == "/ws/notifications/"
    assert strip_query(b"/ws/?token=abc") == "/ws/"


def test_gunicorn_config_from_environment(tmp_path):
    code = ("import json, workorder.gunicorn_conf as c; print(json.dumps({k: getattr(c, k) for k in "
            "('bind', 'workers', 'worker_class', 'threads', 'timeout', 'graceful_timeout', 'keepalive', "
            "'max_requests', 'max_requests_jitter', 'forwarded_allow_ips', 'accesslog')}))")
    env = server_env(tmp_path, None, None, GUNICORN_BIND="unix:/run/x.sock, 127.0.0.1:9001", GUNICORN_WORKERS=3,
                     GUNICORN_WORKER_CLASS="sync", GUNICORN_TIMEOUT=12, GUNICORN_KEEPALIVE=90,
                     GUNICORN_MAX_REQUESTS=50, GUNICORN_MAX_REQUESTS_JITTER=5, GUNICORN_GRACEFUL_TIMEOUT=7,
                     GUNICORN_FORWARDED_ALLOW_IPS="127.0.0.1")
    out = json.loads(subprocess.run([script("python"), "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out == {"bind": ["unix:/run/x.sock", "127.0.0.1:9001"], "workers": 3, "worker_class": "sync",
                   "threads": 1, "timeout": 12, "graceful_timeout": 7, "keepalive": 90, "max_requests": 50,
                   "max_requests_jitter": 5, "forwarded_allow_ips": "127.0.0.1", "accesslog": "-"}
    defaults = json.loads(subprocess.run([script("python"), "-c", code], env=server_env(tmp_path), capture_output=True,
                                         text=True, check=True).stdout)
    assert defaults["bind"] == ["127.0.0.1:8000"] and defaults["keepalive"] > 60  # > nginx upstream keepalive_timeout
    assert defaults["worker_class"] == "gthread" and defaults["workers"] == len(os.sched_getaffinity(0)) + 1
    assert defaults["threads"] == 4


def test_gunicorn_workers_switch_threads_every_millisecond_unless_configured(tmp_path):
    """post_fork (gunicorn's hook in each new worker) sets Python's thread switch interval."""
    code = "import sys, workorder.gunicorn_conf as c; c.post_fork(None, None); print(sys.getswitchinterval())"
    for extra, interval in (({}, 0.001), ({"GUNICORN_SWITCH_INTERVAL_MS": 5}, 0.005)):
        out = subprocess.run([script("python"), "-c", code], env=server_env(tmp_path, None, None, **extra),
                             capture_output=True, text=True, check=True).stdout
        assert float(out) == pytest.approx(interval)


def test_gunicorn_workers_freeze_their_heap_at_start_and_after_their_first_thousand_requests(tmp_path):
    """post_worker_init imports the URLconf (every view and serializer) and freezes the heap;
    post_request freezes it once more at the 1,000th request of the worker, and only then;
    GUNICORN_GC_FREEZE=false leaves the collector alone."""
    code = (
        "import gc, json, sys, workorder.wsgi, workorder.gunicorn_conf as c\n"
        "c.post_worker_init(None)\n"
        "out = {'start': gc.get_freeze_count(), 'urls': 'workorder.production.views' in sys.modules}\n"
        "kept = [[n] for n in range(20000)]\n"
        "for n in range(999): c.post_request(None, None, None, None)\n"
        "out['999'] = gc.get_freeze_count()\n"
        "c.post_request(None, None, None, None)\n"
        "out['1000'] = gc.get_freeze_count()\n"
        "more = [[n] for n in range(20000)]\n"
        "for n in range(2000): c.post_request(None, None, None, None)\n"
        "out['3000'] = gc.get_freeze_count()\n"
        "print(json.dumps(out))\n"
    )
    out = json.loads(subprocess.run([script("python"), "-c", code], env=server_env(tmp_path, None, None),
                                    capture_output=True, text=True, check=True).stdout)
    assert out["urls"] and out["start"] > 50_000, out
    assert out["999"] == out["start"] and out["1000"] >= out["start"] + 20_000, out
    assert out["3000"] == out["1000"], out
    off = json.loads(subprocess.run([script("python"), "-c", code], env=server_env(tmp_path, None, None,
                                                                                    GUNICORN_GC_FREEZE="false"),
                                    capture_output=True, text=True, check=True).stdout)
    assert off["start"] == off["1000"] == 0 and not off["urls"], off


def test_gunicorn_wipes_the_multiprocess_directory_on_start(database, redis, tmp_path):
    env = server_env(tmp_path, database, redis.url())
    server = GunicornServer(env, tmp_path / "g", port=free_port(), workers=1)
    server.metrics_dir.mkdir(parents=True)
    stale = server.metrics_dir / "counter_999999.db"
    stale.write_bytes(b"\0" * 16)
    keep = server.metrics_dir / "README"
    keep.write_text("not a metrics file")
    with server:
        assert not stale.exists() and keep.exists()
        status, _, _ = server.request("GET", "/metrics/")
        assert status == 200
    log = server.log_text()
    # access log on stderr: method, path without query string, status and duration
    assert re.search(r'"GET /metrics/ HTTP/1.1" 200 \d+ \d+ms', log), log[-1500:]


def test_embedded_default_creates_its_state_directory(tmp_path):
    """A fresh checkout has no state directory: SQLite cannot create it, so the settings do."""
    state = tmp_path / "fresh" / "nested" / "state"
    env = server_env(tmp_path, None, None, WORKORDER_STATE_DIR=state)
    manage(env, "migrate", "--noinput", "-v", "0")
    assert (state / "workorder.sqlite3").is_file()


def test_a_state_directory_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = server_env(tmp_path, None, None, WORKORDER_STATE_DIR=blocker / "state")
    result = manage(env, "migrate", "--noinput", check=False)
    assert result.returncode == 2
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert lines == [(f"workorder: configuration error: cannot create the state directory {blocker / 'state'} "
                      "(WORKORDER_STATE_DIR): Not a directory")], lines


# --- production settings -----------------------------------------------------------------------
def test_check_deploy_prints_no_warnings_with_production_settings(tmp_path):
    env = server_env(tmp_path, "postgres://workorder@127.0.0.1:5432/workorder", "redis://127.0.0.1:6379/0",
                     ALLOWED_HOSTS="workorder.example.org", CSRF_TRUSTED_ORIGINS="https://workorder.example.org",
                     WORKORDER_BEHIND_TLS=1)
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_secret_key_from_file(tmp_path):
    key_file = tmp_path / "secret"
    key_file.write_text(SECRET_KEY + "\n")
    env = _without_secret(tmp_path, DJANGO_SECRET_KEY_FILE=key_file)
    code = f"from django.conf import settings; print(settings.SECRET_KEY == {SECRET_KEY!r})"
    result = manage(env, "shell", "-c", code)
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_secrets_from_systemd_credentials(tmp_path):
    """The NixOS module passes *File options as systemd credentials named after the variable
    (LoadCredential=django_secret_key:..., database_password:...); settings read them from
    $CREDENTIALS_DIRECTORY when neither NAME nor NAME_FILE is set."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "django_secret_key").write_text(SECRET_KEY + "\n")
    (credentials / "database_password").write_text("db-secret\n")
    env = _without_secret(tmp_path, CREDENTIALS_DIRECTORY=credentials,
                          DATABASE_URL="postgresql://workorder@127.0.0.1:5432/workorder")
    code = ("from django.conf import settings; "
            f"print(settings.SECRET_KEY == {SECRET_KEY!r}, settings.DATABASES['default']['PASSWORD'])")
    result = manage(env, "shell", "-c", code)
    assert result.stdout.strip().splitlines()[-1] == "True db-secret"


def test_missing_credential_falls_back_to_the_missing_secret_error(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    env = _without_secret(tmp_path, CREDENTIALS_DIRECTORY=credentials)
    result = subprocess.run([script("workorder-manage"), "check"], env=env, capture_output=True, text=True,
                            timeout=60, cwd=str(tmp_path))
    assert result.returncode != 0 and "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) is not set" in result.stderr


def test_behind_tls_settings(tmp_path):
    code = ("import json; from django.conf import settings as s; print(json.dumps([s.SECURE_SSL_REDIRECT, "
            "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, list(s.SECURE_PROXY_SSL_HEADER), "
            "s.DEBUG, s.DATABASES['default']['CONN_MAX_AGE'], s.DATABASES['default']['CONN_HEALTH_CHECKS'], "
            "s.DATABASES['default']['OPTIONS']['connect_timeout']]))")
    env = server_env(tmp_path, "postgres://u@127.0.0.1:5432/db", None, WORKORDER_BEHIND_TLS=1)
    out = json.loads(manage(env, "shell", "-c", code).stdout.strip().splitlines()[-1])
    assert out == [True, True, True, 31536000, ["HTTP_X_FORWARDED_PROTO", "https"], False, 300, True, 5]


def test_health_answers_behind_tls_over_plain_http_with_any_host(database, redis, tmp_path):
    env = server_env(tmp_path, database, redis.url(), WORKORDER_BEHIND_TLS=1, ALLOWED_HOSTS="workorder.example.org")
    with GunicornServer(env, tmp_path / "g", port=free_port(), workers=1) as server:
        assert server.request("GET", "/health/")[0] == 200
        assert server.request("GET", "/ready/")[0] == 200
        assert server.request("GET", "/metrics/")[0] == 200
        # everything else is still host-checked and redirected to https
        status, headers, _ = server.request("GET", "/api/tasks/", headers={"Host": "workorder.example.org"})
        assert status == 301 and headers["Location"].startswith("https://")
        assert server.request("GET", "/api/tasks/", headers={"Host": "evil.example"})[0] == 400

