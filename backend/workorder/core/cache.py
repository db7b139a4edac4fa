"""Django's built-in Redis cache with django-prometheus' cache metrics (hits, misses, failures).

django_prometheus.cache.backends.redis imports django-redis at module level, even for its
NativeRedisCache, so this is the same ten lines without that dependency.

The cache only ever holds values that can be recomputed (pagination counts, statistics), so a Redis
outage (a restart, a full socket backlog) degrades reads to misses and writes to no-ops instead of
failing the request with a 500 (add() reports success, so a "one process recomputes" lock lets the
caller recompute); django_cache_get_fail_total counts the failed reads.
"""

import logging

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

BACKEND_LABEL = "redis"
logger = logging.getLogger("workorder.cache")


class PrometheusRedisCache(RedisCache):
    def get(self, key, default=None, version=None):
        django_cache_get_total.labels(backend=BACKEND_LABEL).inc()
        try:
            result = super().get(key, default=None, version=version)
        except Exception as exc:  # noqa: BLE001 - Redis unavailable: a miss, the caller recomputes
            django_cache_get_fail_total.labels(backend=BACKEND_LABEL).inc()
            logger.warning("cache get failed, treated as a miss: %s: %s", type(exc).__name__, exc)
            return default
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
