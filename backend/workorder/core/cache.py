"""Django's built-in Redis cache with django-prometheus' cache metrics (hits, misses, failures).

django_prometheus.cache.backends.redis imports django-redis at module level, even for its
NativeRedisCache, so this is the same ten lines without that dependency.
"""

from django.core.cache.backends.redis import RedisCache
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

BACKEND_LABEL = "redis"


class PrometheusRedisCache(RedisCache):
    def get(self, key, default=None, version=None):
        django_cache_get_total.labels(backend=BACKEND_LABEL).inc()
        try:
            result = super().get(key, default=None, version=version)
        except Exception:
            django_cache_get_fail_total.labels(backend=BACKEND_LABEL).inc()
            raise
        if result is not None:
            django_cache_hits_total.labels(backend=BACKEND_LABEL).inc()
            return result
        django_cache_misses_total.labels(backend=BACKEND_LABEL).inc()
        return default
