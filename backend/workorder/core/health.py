"""/health/ (liveness: the process answers, nothing else) and /ready/ (PostgreSQL and Redis reachable).

Both are served by OperationalEndpointsMiddleware before host validation and the HTTPS redirect, so a
probe on the loopback port works whatever ALLOWED_HOSTS and WORKORDER_BEHIND_TLS say.
"""

from __future__ import annotations

import logging
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


def check_redis() -> str:
    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return "not configured"
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


CHECKS = {"database": check_database, "redis": check_redis}


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
