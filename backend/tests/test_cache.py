"""The Redis cache (workorder.core.cache) on a real, password-protected Redis: what the project caches
round-trips as JSON, and a pickle planted in Redis is never unpickled (it reads as a miss).

The Redis server requires a password from a file, as the NixOS module's Redis does
(services.redis.servers.workorder.requirePassFile); the cache reaches it through the URL that
settings.py builds (REDIS_URL + REDIS_PASSWORD -> core.env.redis_url_with_password)."""

from __future__ import annotations

import os
import pickle
import time

import pytest
from django.core.cache import caches

from harness.services import RedisServer
from tests import domain_builders as b
from workorder.core.cache import UNREADABLE, JSONSerializer
from workorder.core.env import ConfigurationError, redis_url_with_password

pytestmark = pytest.mark.django_db

# Characters that need quoting in a URL's userinfo.
PASSWORD = "s3cr:et/p@ss%word"


class Planted:
    """Unpickling this creates a directory: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("redis")
    password_file = base / "password"
    password_file.write_text(PASSWORD + "\n")
    server = RedisServer(str(base / "server"), password_file=password_file).start()
    yield server
    server.cleanup()


def cache_settings(url: str) -> dict:
    return {"default": {"BACKEND": "workorder.core.cache.PrometheusRedisCache", "LOCATION": url,
                        "KEY_PREFIX": "workorder", "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}


@pytest.fixture
def redis_cache(redis_server, settings):
    redis_server.client().flushdb()
    url = redis_url_with_password(f"unix://{redis_server.socket_path}?db=0", redis_server.password)
    settings.CACHES = cache_settings(url)  # django.core.cache.cache follows (setting_changed)
    yield caches["default"]
    redis_server.client().flushdb()


def plant(redis_server, cache, key: str, marker) -> None:
    redis_server.client().set(cache.make_and_validate_key(key), pickle.dumps(Planted(marker)))


def test_the_planted_payload_is_live(tmp_path):
    """The payload the tests plant really runs code when unpickled (else they would prove nothing)."""
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(Planted(marker)))
    assert marker.is_dir()


def test_redis_requires_the_password(redis_server, settings):
    import redis

    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=str(redis_server.socket_path)).set("x", 1)
    settings.CACHES = cache_settings(f"unix://{redis_server.socket_path}?db=0")  # no password
    cache = caches["default"]
    cache.set("k", 1)  # logged, nothing cached
    assert cache.get("k", "miss") == "miss"


def test_project_values_round_trip_as_json(redis_cache, redis_server):
    shop = b.Shop()
    shop.approved(quantity=2)
    from workorder.statistics import queries

    values = {
        "pagecount:abc": 123,  # core.pagination: a count
        "login:gen": 7,  # accounts.lockout: counters and generations
        "login:0:0:lock:x": time.time() + 900.5,  # accounts.lockout: a deadline (float)
        "statistics:task_summary": {"value": queries.task_summary(), "expires": time.time() + 5},
        "statistics:department_workload": {"value": queries.department_workload(), "expires": time.time() + 5},
        "statistics:collaboration": {"value": queries.collaboration(), "expires": time.time() + 5},
    }
    for key, value in values.items():
        redis_cache.set(key, value, 60)
        assert redis_cache.get(key) == value, key
    assert redis_cache.get_many(list(values)) == values
    # Integers stay Redis integers (atomic incr); everything else is JSON text, no pickle.
    raw = redis_server.client()
    assert raw.get(redis_cache.make_and_validate_key("pagecount:abc")) == b"123"
    assert redis_cache.incr("login:gen") == 8
    stored = raw.get(redis_cache.make_and_validate_key("statistics:task_summary"))
    assert stored.startswith(b'{"value":{'), stored[:40]


def test_statistics_and_pagination_through_the_cache(redis_cache, redis_server, settings):
    """The real code paths: the statistics endpoint's cache and the cached paginator count."""
    settings.STATISTICS_CACHE_SECONDS = 60
    shop = b.Shop()
    shop.approved(quantity=2)
    from workorder.core.pagination import CachedCountPaginator
    from workorder.production.models import Task
    from workorder.statistics import queries
    from workorder.statistics.views import cached

    first = cached("task_summary", queries.task_summary)
    assert cached("task_summary", lambda: pytest.fail("recomputed: the cached value was not read back")) == first
    assert CachedCountPaginator(Task.objects.order_by("pk"), 10).count == 2
    Task.objects.all().delete()
    assert CachedCountPaginator(Task.objects.order_by("pk"), 10).count == 2  # from the cache


def test_login_lockout_through_the_cache(redis_cache, settings):
    from workorder.accounts import lockout
    from workorder.core.errors import TooManyAttempts

    settings.WORKORDER_LOGIN_FAILURES_PER_ACCOUNT = 2
    lockout.record_failure("alice", "192.0.2.1")
    with pytest.raises(TooManyAttempts):
        lockout.record_failure("alice", "192.0.2.1")
    with pytest.raises(TooManyAttempts):
        lockout.check_not_locked("alice", "192.0.2.1")


def test_a_planted_pickle_is_a_miss_and_never_unpickled(redis_cache, redis_server, tmp_path, settings):
    settings.STATISTICS_CACHE_SECONDS = 60
    from workorder.statistics.views import cached

    marker = tmp_path / "unpickled"
    plant(redis_server, redis_cache, "statistics:task_summary", marker)
    assert redis_cache.get("statistics:task_summary", "miss") == "miss"
    assert not marker.exists()
    # Deleted on read, so the next set() and add() are not blocked by it.
    assert redis_server.client().get(redis_cache.make_and_validate_key("statistics:task_summary")) is None

    plant(redis_server, redis_cache, "statistics:collaboration", marker)
    assert cached("collaboration", lambda: {"handoffs": [], "waiting": []}).value == {"handoffs": [], "waiting": []}
    assert cached("collaboration", lambda: pytest.fail("recomputed")).value == {"handoffs": [], "waiting": []}

    plant(redis_server, redis_cache, "login:gen", marker)
    redis_cache.set("login:other", 1.5, 60)
    assert redis_cache.get_many(["login:gen", "login:other"]) == {"login:other": 1.5}
    assert not marker.exists()


def test_json_serializer_never_unpickles(tmp_path):
    serializer = JSONSerializer()
    marker = tmp_path / "unpickled"
    assert serializer.loads(pickle.dumps(Planted(marker))) is UNREADABLE
    assert serializer.loads(pickle.dumps(1.5)) is UNREADABLE
    assert not marker.exists()
    for value in (0, -3, 1.5, "12", "text", True, None, [1, "a"], {"a": {"b": [1.25, None]}}):
        assert serializer.loads(serializer.dumps(value)) == value
    with pytest.raises(TypeError):
        serializer.dumps(object())


def test_redis_url_with_password():
    assert redis_url_with_password("unix:///run/redis-workorder/redis.sock?db=0", "p@ss/w:rd%") == (
        "unix://:p%40ss%2Fw%3Ard%25@/run/redis-workorder/redis.sock?db=0")
    assert redis_url_with_password("redis://alice@db.internal:6379/1", "pw") == "redis://alice:pw@db.internal:6379/1"
    assert redis_url_with_password("redis://127.0.0.1:6379/0", None) == "redis://127.0.0.1:6379/0"
    assert redis_url_with_password(None, "pw") is None
    with pytest.raises(ConfigurationError, match="not both"):
        redis_url_with_password("redis://:old@127.0.0.1:6379/0", "new")


def test_settings_read_the_redis_password_from_a_file(tmp_path):
    """REDIS_PASSWORD_FILE (or the systemd credential redis_password) ends up in settings.REDIS_URL."""
    import subprocess
    import sys

    password_file = tmp_path / "redis_password"
    password_file.write_text("from-a-file\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "redis_password").write_text("a-credential\n")
    code = "from django.conf import settings; print(settings.REDIS_URL)"
    base = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "workorder.settings",
            "WORKORDER_STATE_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "x" * 50,
            "REDIS_URL": "unix:///run/redis-workorder/redis.sock?db=0"}
    for extra, expected in (({"REDIS_PASSWORD_FILE": str(password_file)}, "from-a-file"),
                            ({"CREDENTIALS_DIRECTORY": str(credentials)}, "a-credential")):
        out = subprocess.run([sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True,
                             cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"unix://:{expected}@/run/redis-workorder/redis.sock?db=0"


def test_every_cache_operation_and_thread_shares_one_redis_client_and_connection_pool(redis_cache, monkeypatch):
    """One redis.Redis per pool, not one per operation (Django's default); parallel threads share it and
    each sees its own writes."""
    import threading

    import redis

    built = []
    original_init = redis.Redis.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        original_init(self, *args, **kwargs)

    errors = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                redis_cache.set(f"t{n}-{i}", i)
                assert redis_cache.get(f"t{n}-{i}") == i
                assert redis_cache.add(f"t{n}-{i}", -1) is False
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    monkeypatch.setattr(redis.Redis, "__init__", counting_init)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(built) <= 1  # the first operation of the fixture's fresh cache may build it, nothing after
    assert redis_cache.get_many([f"t{n}-49" for n in range(8)]) == {f"t{n}-49": 49 for n in range(8)}


def test_the_shared_client_reconnects_after_a_redis_restart(redis_cache, redis_server):
    redis_cache.set("before", 1)
    redis_server.stop()
    assert redis_cache.get("before") is None  # Redis down: a miss, logged, no exception
    redis_server.start()
    redis_cache.set("after", 2)
    assert redis_cache.get("after") == 2
