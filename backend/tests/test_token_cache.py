"""The per-process copies of token lookups (accounts/token_cache.py): dropped in every gunicorn worker the
moment a token or its user changes, in whichever process the change was made, and not used while a
worker cannot listen for changes."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import dj_database_url
import psycopg2
import pytest

from workorder.accounts import token_cache
from workorder.accounts.token_cache import ALL, HEARTBEAT_SECONDS, TokenCache

LOGIN, ME, LOGOUT = "/api/auth/login/", "/api/auth/me/", "/api/auth/logout/"
PASSWORD = "cache-pass-123"


# --- the rules of one process's copies ---------------------------------------------------------------

def listening_cache() -> TokenCache:
    cache = TokenCache()
    cache._heard()
    return cache


def test_a_lookup_under_way_when_a_change_arrives_is_not_kept(settings):
    settings.WORKORDER_TOKEN_CACHE_SECONDS = 30
    cache = listening_cache()
    before = cache.generation()
    cache.drop({7})  # a change arrives while the lookup waits on the database
    cache.put("digest", 7, ("row",), before)
    assert cache.get("digest") is None
    cache.put("digest", 7, ("row",), cache.generation())
    assert cache.get("digest") == ("row",)


def test_a_change_drops_only_that_users_copies(settings):
    settings.WORKORDER_TOKEN_CACHE_SECONDS = 30
    cache = listening_cache()
    cache.put("mine", 7, ("mine",), cache.generation())
    cache.put("theirs", 8, ("theirs",), cache.generation())
    cache.drop({7})
    assert cache.get("mine") is None and cache.get("theirs") == ("theirs",)
    cache.drop(ALL)
    assert cache.get("theirs") is None


def test_copies_are_not_used_when_the_listener_has_been_silent_too_long(settings):
    settings.WORKORDER_TOKEN_CACHE_SECONDS = 30
    cache = listening_cache()
    cache.put("digest", 7, ("row",), cache.generation())
    assert cache.get("digest") == ("row",)
    cache._heard_at = time.monotonic() - HEARTBEAT_SECONDS * 3 - 1  # e.g. a connection hanging in a partition
    assert cache.get("digest") is None
    cache.put("other", 8, ("row",), cache.generation())
    cache._heard()
    assert cache.get("other") is None, "a lookup made while not listening was kept"


def test_copies_expire_after_the_configured_seconds(settings):
    settings.WORKORDER_TOKEN_CACHE_SECONDS = 30
    cache = listening_cache()
    cache.put("digest", 7, ("row",), cache.generation())
    digest_entry = cache._entries["digest"]
    cache._entries["digest"] = (time.monotonic() - 1, *digest_entry[1:])
    assert cache.get("digest") is None


def test_nothing_is_kept_when_turned_off(settings):
    settings.WORKORDER_TOKEN_CACHE_SECONDS = 0
    assert not TokenCache().enabled()


# --- a real gunicorn: three workers, changes made in a worker and in another process -------------------

@pytest.fixture
def node(postgres_server, tmp_path):
    from harness.app import GunicornServer
    from tests.runtime_support import create_database, manage, run_python, server_env

    url = create_database(postgres_server, "wo_token_cache")
    env = server_env(tmp_path, url, WORKORDER_TOKEN_CACHE_SECONDS=30)
    manage(env, "migrate", "--noinput")
    run_python(env, "from workorder.accounts.models import User; import json\n"
                    f"User.objects.create_user('cached', password='{PASSWORD}', role='maker')\n"
                    "print(json.dumps({}))")
    # One thread per worker and parallel clients: every worker serves (and keeps) the token.
    server = GunicornServer(env, tmp_path / "gunicorn", unix_socket=True, workers=3, threads=1).start()
    try:
        yield server, env, url
    finally:
        server.stop()


def login(server) -> str:
    status, _, body = server.request("POST", LOGIN, body={"username": "cached", "password": PASSWORD})
    assert status == 200, body
    return json.loads(body)["token"]


def me_everywhere(server, token: str, count: int = 60) -> list[tuple[int, str | None]]:
    """`count` GET /api/auth/me/ on fresh connections, 6 at a time: (status, role) of each."""

    def one(_):
        status, _, body = server.request("GET", ME, headers={"Authorization": f"Token {token}"})
        return status, json.loads(body).get("role") if status == 200 else None

    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(one, range(count)))


def eventually(server, token: str, expected: set, within: float = 1.0) -> None:
    """Every request of a round answers `expected` within `within` seconds (copies would last 30)."""
    deadline = time.monotonic() + within
    while (seen := set(me_everywhere(server, token))) != expected:
        assert time.monotonic() < deadline, f"still {seen} after {within} s, expected {expected}"


def sql(url: str, statement: str, params=()) -> list[tuple]:
    db = dj_database_url.parse(url)
    conn = psycopg2.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None,
                            host=db["HOST"] or None, port=db["PORT"] or None)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


def serve_everywhere(server, token: str, url: str, workers: int = 3) -> None:
    """Requests until every worker has served one (and so listens on the channel)."""
    deadline = time.monotonic() + 30
    while len(listeners(url)) < workers:
        assert time.monotonic() < deadline, f"fewer than {workers} workers listen: {listeners(url)}"
        me_everywhere(server, token, 12)


def listeners(url: str) -> list[int]:
    return [pid for (pid,) in sql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                                       "AND datname = current_database()", [token_cache.APPLICATION_NAME])]


@pytest.mark.services
def test_a_logout_in_one_worker_is_refused_by_every_worker_within_a_second(node):
    server, _, url = node
    token = login(server)
    serve_everywhere(server, token, url)
    assert {status for status, _ in me_everywhere(server, token)} == {200}
    status, _, body = server.request("POST", LOGOUT, headers={"Authorization": f"Token {token}"})
    assert status in (200, 204), body
    eventually(server, token, {(401, None)})


@pytest.mark.services
def test_a_role_saved_by_another_process_applies_in_every_worker_within_a_second(node):
    from tests.runtime_support import run_python

    server, env, url = node
    token = login(server)
    serve_everywhere(server, token, url)
    assert {role for _, role in me_everywhere(server, token)} == {"maker"}
    run_python(env, "from workorder.accounts.models import User; import json\n"
                    "user = User.objects.get(username='cached'); user.role = 'supervisor'; user.save()\n"
                    "print(json.dumps({}))")
    eventually(server, token, {(200, "supervisor")})


@pytest.mark.services
def test_workers_keep_lookups_and_drop_them_all_when_they_stop_listening(node):
    server, _, url = node
    token = login(server)
    serve_everywhere(server, token, url)
    me_everywhere(server, token)
    # Deleted by hand, without telling anyone: the workers' copies still accept the token (they are used) ...
    sql(url, "DELETE FROM accounts_authtoken")
    assert 200 in {status for status, _ in me_everywhere(server, token, 12)}
    # ... until their listening connections break: then every copy is dropped at once.
    killed = listeners(url)
    sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", [killed])
    # A listener drops every copy before it connects again: once all listen anew, none can be left.
    deadline = time.monotonic() + 20
    while len(set(listeners(url)) - set(killed)) < 3:
        assert time.monotonic() < deadline, "the workers did not listen again"
        time.sleep(0.05)
    assert {status for status, _ in me_everywhere(server, token)} == {401}
