"""Django's built-in Redis cache with django-prometheus' cache metrics (hits, misses, failures).

django_prometheus.cache.backends.redis imports django-redis at module level, even for its
NativeRedisCache, so this is the same ten lines without that dependency.

The cache only ever holds values that can be recomputed (pagination counts, statistics), so a Redis
outage (a restart, a full socket backlog) degrades reads to misses and writes to no-ops instead of
failing the request with a 500 (add() reports success, so a "one process recomputes" lock lets the
caller recompute); django_cache_get_fail_total counts the failed reads.

Values are stored as JSON, never pickled (`JSONSerializer`): Django's default RedisSerializer
unpickles whatever it reads, so anyone able to write to Redis could run code in every gunicorn
worker. JSON only ever yields dicts, lists, strings, numbers, booleans and None. What the project
caches is JSON already: integers (pagination counts, lockout counters and generations; stored as
plain Redis integers, as Django does, so incr() stays atomic), floats (lockout deadlines) and the
statistics answers (dicts of strings and numbers). A value that is not JSON (a pickle written by an
older release, or anything planted) is never decoded: it reads as a miss and is deleted.
"""

import json
import logging

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

BACKEND_LABEL = "redis"
logger = logging.getLogger("workorder.cache")


class _Unreadable:
    """What JSONSerializer.loads returns for bytes that are not JSON (never unpickled)."""

    def __repr__(self) -> str:
        return "<unreadable cache value>"


UNREADABLE = _Unreadable()


class JSONSerializer:
    """Django's RedisSerializer contract (dumps/loads), with JSON instead of pickle."""

    def dumps(self, obj):
        # Like Django: integers stay Redis integers, so incr()/decr() are atomic on the server.
        if type(obj) is int:
            return obj
        # A value JSON cannot represent raises TypeError: set() logs it and caches nothing.
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data):
        try:
            return int(data)
        except ValueError:
            pass
        try:
            return json.loads(data)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError: a pickle or garbage
            return UNREADABLE


class ReusedClientRedisCacheClient(RedisCacheClient):
    """Django's client, with one redis.Redis per connection pool instead of one per cache operation.

    Django builds a redis.Redis for every get/set: redis-py's constructor fills its table of ~170
    response callbacks each time, ~0.1 ms of CPU, as much as the GET itself, on every list page (its
    count) and statistics request. A redis.Redis over a ConnectionPool is safe to share between
    threads (each command checks a connection out of the pool), and the pool itself resets after a
    fork; a race between two threads at the first use only builds one client too many."""

    def __init__(self, servers, **options):
        super().__init__(servers, **options)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)  # pools live as long as this object: id() stays theirs
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class PrometheusRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = ReusedClientRedisCacheClient
        # JSON unless settings name another serializer explicitly (never Django's pickle default).
        self._options = {"serializer": JSONSerializer, **self._options}

    def _unreadable(self, key, version) -> None:
        logger.warning("cache value of %s is not JSON (a pickle from an older release?): treated as a miss "
                       "and deleted", key)
        self.delete(key, version=version)

    def get(self, key, default=None, version=None):
        django_cache_get_total.labels(backend=BACKEND_LABEL).inc()
        try:
            result = super().get(key, default=None, version=version)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable: a miss, the caller recomputes
            django_cache_get_fail_total.labels(backend=BACKEND_LABEL).inc()
            logger.warning("cache get failed, treated as a miss: %s: %s", type(exc).__name__, exc)
            return default
        if result is UNREADABLE:
            self._unreadable(key, version)
            result = None
        if result is not None:
            django_cache_hits_total.labels(backend=BACKEND_LABEL).inc()
            return result
        django_cache_misses_total.labels(backend=BACKEND_LABEL).inc()
        return default

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            super().set(key, value, timeout=timeout, version=version)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable: nothing cached this time
            logger.warning("cache set failed, not cached: %s: %s", type(exc).__name__, exc)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        try:
            return super().add(key, value, timeout=timeout, version=version)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable: let the caller go ahead and recompute
            logger.warning("cache add failed, treated as added: %s: %s", type(exc).__name__, exc)
            return True

    def delete(self, key, version=None):
        try:
            return super().delete(key, version=version)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable: the key expires by itself
            logger.warning("cache delete failed, left to expire: %s: %s", type(exc).__name__, exc)
            return False

    def get_many(self, keys, version=None):
        found = super().get_many(keys, version=version)
        for key in [key for key, value in found.items() if value is UNREADABLE]:
            self._unreadable(key, version)
            del found[key]
        return found
