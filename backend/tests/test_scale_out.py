"""Several application nodes on one database: migrations once under a lock, a node whose code expects a
newer schema refuses to serve, client addresses believed only from the balancer, one secret key.

The two-node topology itself (nginx in front, a node stopped under load) is tests/stack/test_multinode.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time

import dj_database_url
import psycopg2
import pytest

from harness.app import GunicornServer, gunicorn_argv, wait_for
from harness.services import free_port
from tests.runtime_support import SECRET_KEY, create_database, manage, script, server_env

pytestmark = pytest.mark.services


# --- the client-address rule for ASGI (daphne) ----------------------------------------------------------

def scope(peer, real_ip=None, kind="websocket"):
    headers = [(b"host", b"localhost")] + ([(b"x-real-ip", real_ip.encode())] if real_ip else [])
    return {"type": kind, "client": peer, "headers": headers}


@pytest.mark.parametrize("peer, real_ip, expected", [
    (["127.0.0.1", 40000], "203.0.113.7", ["203.0.113.7", 40000]),   # the balancer (trusted): its X-Real-IP
    (None, "203.0.113.7", ["203.0.113.7", 0]),                       # a unix-socket peer: only nginx connects
    (["192.0.2.10", 40000], "203.0.113.7", ["192.0.2.10", 40000]),   # anyone else: its own address
    (["127.0.0.1", 40000], "not-an-address", ["127.0.0.1", 40000]),  # garbage is ignored
    (["127.0.0.1", 40000], None, ["127.0.0.1", 40000]),
])
def test_asgi_client_address_takes_x_real_ip_only_from_trusted_proxies(settings, peer, real_ip, expected):
    from workorder.core.client_address import ClientAddressMiddleware

    settings.WORKORDER_TRUSTED_PROXY_NETWORKS = ["127.0.0.1/32"]
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["client"])

    for kind in ("websocket", "http"):
        asyncio.run(ClientAddressMiddleware(app)(scope(peer, real_ip, kind), None, None))
    assert seen == [expected, expected]
    # Applying the rule twice (daphne's server class, then the middleware) changes nothing.
    asyncio.run(ClientAddressMiddleware(ClientAddressMiddleware(app))(scope(peer, real_ip), None, None))
    assert seen[-1] == expected


# --- one secret key for every node ------------------------------------------------------------------

def settings_load(env: dict) -> subprocess.CompletedProcess:
    code = ("from workorder.core.env import configuration_errors\n"  # as every entry point: one line, exit 2
            "with configuration_errors():\n    from django.conf import settings; settings.SECRET_KEY")
    return subprocess.run([script("python"), "-c", code],
                          env=env, capture_output=True, text=True, timeout=60)


def test_several_nodes_require_a_shared_secret_key(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "secret_key").write_text(SECRET_KEY)
    shared = tmp_path / "shared_key"
    shared.write_text(SECRET_KEY)
    base = {k: v for k, v in server_env(tmp_path).items() if k != "DJANGO_SECRET_KEY"}
    cases = {
        "debug key": ({"DJANGO_DEBUG": "1", "WORKORDER_NODES": "2"}, "every node needs the same secret key"),
        "per-node key": ({"DJANGO_SECRET_KEY_FILE": str(state / "secret_key"), "WORKORDER_NODES": "2"},
                         "lies in this node's state directory"),
        "zero nodes": ({"DJANGO_SECRET_KEY_FILE": str(shared), "WORKORDER_NODES": "0"}, "at least 1"),
    }
    for name, (extra, message) in cases.items():
        result = settings_load({**base, **extra})
        assert result.returncode == 2, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("workorder: configuration error: ") and message in lines[0], \
            (name, lines)
    for extra in ({"DJANGO_SECRET_KEY_FILE": str(shared), "WORKORDER_NODES": "2"},
                  {"DJANGO_SECRET_KEY_FILE": str(state / "secret_key"), "WORKORDER_NODES": "1"},
                  {"DJANGO_DEBUG": "1"}):
        result = settings_load({**base, **extra})
        assert result.returncode == 0, (extra, result.stderr)


# --- migrations once, under the lock --------------------------------------------------------------------

@pytest.fixture
def fresh_database(postgres_server, tmp_path):
    """A database without any migration applied, and the environment of a node on it."""
    url = create_database(postgres_server, prefix="wo_scale")
    return url, server_env(tmp_path, url)


def applied(url: str) -> list[tuple[str, str]]:
    db = dj_database_url.parse(url)
    conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"] or None, port=db["PORT"] or None)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT app, name FROM django_migrations ORDER BY id")
            return cursor.fetchall()
    finally:
        conn.close()


def test_nodes_starting_together_apply_migrations_once(fresh_database):
    url, env = fresh_database
    results = [None, None]

    def node(index):
        results[index] = manage(env, "migrate_locked", "--no-input", check=False, timeout=300)

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(r is not None and r.returncode == 0 for r in results), [r and (r.stdout, r.stderr) for r in results]
    appliers = [r for r in results if "  Applying " in r.stdout]
    assert len(appliers) == 1, [r.stdout for r in results]  # one node migrated ...
    other = next(r for r in results if r is not appliers[0])
    assert "No migrations to apply." in other.stdout  # ... the other waited, then found nothing to do
    assert all("migrate_locked: holding the migration lock" in r.stdout for r in results)
    rows = applied(url)
    assert rows and len(rows) == len(set(rows))  # every migration recorded exactly once
    assert manage(env, "migrate_locked", "--check", check=False).returncode == 0


def test_migrate_locked_waits_for_the_lock_and_gives_up_after_its_timeout(fresh_database):
    from workorder.core.migration_state import MIGRATION_LOCK_KEY

    url, env = fresh_database
    db = dj_database_url.parse(url)
    holder = psycopg2.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"] or None, port=db["PORT"] or None)
    holder.autocommit = True
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        started = time.monotonic()
        result = manage(env, "migrate_locked", "--no-input", "--lock-timeout", "2", check=False)
        assert result.returncode == 1 and time.monotonic() - started >= 2
        assert "another node has held the migration lock for over 2s" in result.stderr
        assert not _has_migrations_table(url)  # nothing ran before the lock
    finally:
        holder.close()  # the session ends, the lock with it
    assert manage(env, "migrate_locked", "--no-input", "--lock-timeout", "30", check=False).returncode == 0


def test_migrate_locked_waits_for_a_database_that_starts_later(fresh_database, tmp_path):
    """An app node booting before its database host: the command waits, then migrates; without a
    database within --wait-for-database it fails naming the wait."""
    import socket

    url, env = fresh_database
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = dj_database_url.parse(url)
    unreachable = {**env, "DATABASE_URL": f"postgres://{db['USER']}@127.0.0.1:{port}/{db['NAME']}",
                   "DATABASE_CONNECT_TIMEOUT": "1"}
    started = time.monotonic()
    result = manage(unreachable, "migrate_locked", "--no-input", "--wait-for-database", "3", check=False)
    assert result.returncode == 1 and time.monotonic() - started >= 3
    assert "the database did not accept connections within 3s" in result.stderr
    assert "migrate_locked: waiting for the database" in result.stdout

    forward = {}

    def relay():  # the database "starts" 2 s later: a TCP relay to the real server opens on the port
        time.sleep(2)
        listener = socket.create_server(("127.0.0.1", port))
        forward["listener"] = listener
        listener.settimeout(60)
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        result = manage(unreachable, "migrate_locked", "--no-input", "--wait-for-database", "60", check=False,
                        timeout=300)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "migrate_locked: waiting for the database" in result.stdout and "  Applying " in result.stdout
    finally:
        if "listener" in forward:
            forward["listener"].close()


def _pipe(source, target) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        target.close()


def _has_migrations_table(url: str) -> bool:
    try:
        applied(url)
        return True
    except psycopg2.Error:
        return False


# --- a node whose code expects a newer schema refuses to serve --------------------------------------------

def test_gunicorn_exits_2_naming_the_missing_migrations(fresh_database, tmp_path):
    _, env = fresh_database
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{free_port()}", "GUNICORN_WORKERS": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    result = subprocess.run(gunicorn_argv(), env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("workorder:")]
    assert len(lines) == 1 and lines[0].startswith("workorder: configuration error: the database lacks "), lines
    assert "migrate_locked" in lines[0]
    assert "Booting worker" not in result.stderr  # refused before any worker


def test_ready_names_missing_migrations_until_they_are_applied(fresh_database, tmp_path):
    _, env = fresh_database
    # The start check is off here, so the running node shows what /ready/ says about the schema.
    server = GunicornServer({**env, "WORKORDER_CHECK_MIGRATIONS_AT_START": "0"}, tmp_path / "g", port=free_port(),
                            workers=1).start()  # ready = /health/ answers, which needs no schema
    try:
        status, _, body = server.request("GET", "/ready/")
        data = json.loads(body)
        assert status == 503 and data["failed"] == ["migrations"], data
        assert data["checks"]["migrations"] == "error: PendingMigrations" and data["checks"]["database"] == "ok"
        manage(env, "migrate_locked", "--no-input")
        wait_for(lambda: server.request("GET", "/ready/")[0] == 200, timeout=10, what="ready after migrate")
        assert json.loads(server.request("GET", "/ready/")[2])["checks"]["migrations"] == "ok"
    finally:
        server.stop()
