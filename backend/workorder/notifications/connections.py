"""Open WebSocket connections, counted per daphne process and readable by gunicorn's /metrics/."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


class ConnectionCounter:
    """Open connections of this daphne process, published in Redis for the /metrics/ scrape.

    Each daphne process owns one key `workorder:ws_connections:<host>:<pid>` holding its count with a
    TTL, refreshed on every change and every REFRESH seconds; /metrics/ sums all keys. A crashed
    process's key expires after TTL seconds. Without Redis (embedded default) one process serves
    everything and the count is read in-process.
    """

    KEY_PREFIX = "workorder:ws_connections:"
    TTL = 60
    REFRESH = 20

    def __init__(self) -> None:
        self.count = 0
        self.key = f"{self.KEY_PREFIX}{socket.gethostname()}:{os.getpid()}"
        self._client = None
        self._client_loop = None
        self._refresher: asyncio.Task | None = None
        self._last_error_log = 0.0

    def _redis(self):
        from django.conf import settings

        url = getattr(settings, "REDIS_URL", None)
        if not url:
            return None
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
            self._client_loop = loop
        return self._client

    async def publish(self) -> None:
        client = self._redis()
        if client is None:
            return
        try:
            await client.set(self.key, self.count, ex=self.TTL)
        except Exception as exc:  # noqa: BLE001 - metrics must never break a connection
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                logger.warning("websocket connection count not published: %s: %s", type(exc).__name__, exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.REFRESH)
            await self.publish()

    async def change(self, delta: int) -> None:
        self.count = max(0, self.count + delta)
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        await self.publish()


connections = ConnectionCounter()


def websocket_connection_count() -> int | None:
    """Sum over all daphne processes (for /metrics/); None if Redis cannot be read."""
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return connections.count
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            keys = list(client.scan_iter(match=f"{ConnectionCounter.KEY_PREFIX}*", count=100))
            values = client.mget(keys) if keys else []
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - the gauge is simply absent from this scrape
        return None
    return sum(int(v) for v in values if v is not None)
