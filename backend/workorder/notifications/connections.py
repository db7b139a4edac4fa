"""Open WebSocket connections: the per-process count read by gunicorn's /metrics/, and the per-user
registry that enforces WORKORDER_WS_MAX_CONNECTIONS_PER_USER across every daphne process."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


_client = None
_client_loop = None


def redis_client():
    """This event loop's asyncio Redis client (REDIS_URL), or None on the embedded default."""
    global _client, _client_loop
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return None
    loop = asyncio.get_running_loop()
    if _client is None or _client_loop is not loop:
        import redis.asyncio

        _client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        _client_loop = loop
    return _client


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
        self._refresher: asyncio.Task | None = None
        self._last_error_log = 0.0
        self._lock: asyncio.Lock | None = None
        self._lock_loop = None

    def _redis(self):
        return redis_client()

    def _publish_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def publish(self) -> None:
        client = self._redis()
        if client is None:
            return
        # One SET at a time, each with the count as it is when it is sent: two sockets closing at
        # once would otherwise send 1 and 0 on two pooled connections, and Redis could apply the 1
        # last, leaving the gauge wrong until the next refresh.
        try:
            async with self._publish_lock():
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


# Admits a socket if the user has fewer than ARGV[3] live ones. Expired members (a crashed or partitioned
# process stopped refreshing them) are pruned first. Redis's clock, so nodes' clocks never matter.
_ADMIT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
# Extends this process's sockets (one call per socket, pipelined).
_REFRESH = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class UserSocketRegistry:
    """Open sockets per user over every daphne process, for the per-user cap.

    With Redis: one sorted set per user, `workorder:ws_sockets:<user id>`, member = the socket's channel
    name, score = when the entry expires (Redis time). admit() prunes expired members and adds the
    socket only if fewer than `limit` remain, atomically (a Lua script), so two processes admitting at
    once cannot both take the last place. Each process re-extends its own members every REFRESH
    seconds; a crashed process's members expire after TTL seconds, and the key itself with its last
    member. Without Redis (embedded default: one process serves everything) the sets live in memory.
    """

    KEY_PREFIX = "workorder:ws_sockets:"
    TTL = 90
    REFRESH = 30

    def __init__(self) -> None:
        self.local: dict[str, int] = {}  # channel name -> user id, this process's sockets
        self._refresher: asyncio.Task | None = None
        self._last_error_log = 0.0

    def key(self, user_id: int) -> str:
        return f"{self.KEY_PREFIX}{user_id}"

    async def admit(self, user_id: int, channel_name: str, limit: int) -> bool:
        """Register the socket if the user has fewer than `limit` open; False if not. Redis errors raise."""
        client = redis_client()
        if client is None:
            if sum(1 for owner in self.local.values() if owner == user_id) >= limit:
                return False
            self.local[channel_name] = user_id
            return True
        admitted = await client.eval(_ADMIT, 1, self.key(user_id), channel_name, self.TTL, limit)
        if not admitted:
            return False
        self.local[channel_name] = user_id
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        return True

    async def release(self, channel_name: str) -> None:
        user_id = self.local.pop(channel_name, None)
        client = redis_client()
        if user_id is None or client is None:
            return
        try:
            await client.zrem(self.key(user_id), channel_name)
        except Exception as exc:  # noqa: BLE001 - the member expires by itself after TTL seconds
            self._log_error("not released", exc)

    async def refresh(self) -> None:
        client = redis_client()
        if client is None or not self.local:
            return
        try:
            async with client.pipeline(transaction=False) as pipe:
                for channel_name, user_id in list(self.local.items()):
                    pipe.eval(_REFRESH, 1, self.key(user_id), channel_name, self.TTL)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - retried at the next refresh, well before the TTL ends
            self._log_error("not refreshed", exc)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.REFRESH)
            await self.refresh()

    def _log_error(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log > 60:
            self._last_error_log = now
            logger.warning("websocket registry entries %s: %s: %s", what, type(exc).__name__, exc)


user_sockets = UserSocketRegistry()


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
