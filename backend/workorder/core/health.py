"""/health/ (liveness: the process answers, nothing else) and /ready/ (PostgreSQL and Redis reachable,
and the database has every migration this code needs: core/migration_state.py).

/ready/ is for the probes on gunicorn's loopback listener; nginx closes it to the outside
(nix/deployment.nix), like /metrics/. It reuses one pooled Redis client per process.

Both are served by OperationalEndpointsMiddleware before host validation and the HTTPS redirect, so a
probe on the loopback port works whatever ALLOWED_HOSTS and WORKORDER_BEHIND_TLS say.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connections
from django.http import JsonResponse

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 1.0


def health(request):
    return JsonResponse({"status": "ok"})


def check_database() -> str:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        # A broken persistent connection must not stick to this worker: the next request reconnects.
        connection.close_if_unusable_or_obsolete()
        connection.close()
        raise
    return "ok"


_redis_clients: dict[str, object] = {}
_redis_clients_lock = threading.Lock()


def redis_client(url: str):
    """One client (and so one connection pool) per process and URL, shared by every /ready/ call and
    thread: a probe reuses a pooled connection instead of connecting anew. redis-py's pool notices
    a fork and starts fresh in the child, so a client never crosses processes."""
    client = _redis_clients.get(url)
    if client is None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        with _redis_clients_lock:
            client = _redis_clients.get(url)
            if client is None:
                client = redis.Redis.from_url(
                    url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS,
                    retry=Retry(NoBackoff(), 0), health_check_interval=30,
                )
                _redis_clients[url] = client
    return client


def check_redis() -> str:
    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return "not configured"
    redis_client(url).ping()  # a broken connection is dropped by the pool, the next call reconnects
    return "ok"


def check_migrations() -> str:
    """A node whose code expects a newer schema is not ready (its requests would fail on missing
    tables or columns): 503 naming "migrations" until `migrate_locked` ran. Free once it passed."""
    from .migration_state import check_schema_complete

    return check_schema_complete(connections["default"])


CHECKS = {"database": check_database, "redis": check_redis, "migrations": check_migrations}


def ready(request):
    results: dict[str, str] = {}
    failed: list[str] = []
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            results[name] = check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", named in the answer
            results[name] = f"error: {type(exc).__name__}"
            failed.append(name)
            logger.warning("readiness: %s failed after %.2fs: %s: %s", name, time.monotonic() - started,
                           type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    body = {"status": "ok" if not failed else "unavailable", "checks": results}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)
