"""Live delivery of notifications: push() from any process, the WebSocket consumer in daphne.

Protocol (docs/runtime.md has the full description):
- connect to /ws/notifications/ with the API token, preferably in a header
  (`Authorization: Token <key>`) or as a subprotocol pair (`workorder.v1`, `workorder.token.<key>`,
  what browsers can send), or as `?token=<key>` (kept out of every log line we control);
- a missing/invalid token: the socket is accepted and immediately closed with code 4401;
- server -> client: {"type": "notification", "id", "kind", "message",
  "object": {"type": "production.task", "id": 7} | null, "created_at"};
- client -> server: {"action": "mark_read", "id": N} -> {"type": "mark_read", "id": N, "ok": true|false}.

The database row is the truth; the push is a hint. If Redis is down, push() logs one line and returns,
and a client re-fetches /api/notifications/ after reconnecting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.urls import path

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401  # like HTTP 401: missing or invalid token; do not retry with the same token
CLOSE_UNAVAILABLE = 1011  # the channel layer (Redis) is unreachable; retry later
SUBPROTOCOL = "workorder.v1"
TOKEN_SUBPROTOCOL_PREFIX = "workorder.token."
MAX_CLIENT_MESSAGE_CHARS = 4096  # daphne caps frames at 64 KiB; our own messages are far smaller
PUSH_TIMEOUT_SECONDS = 2.0


def group_name(user_id: int) -> str:
    return f"notifications.user.{user_id}"


def serialize(notification) -> dict:
    created_at = notification.created_at
    return {
        "type": "notification",
        "id": notification.pk,
        "kind": notification.kind,
        "message": notification.message,
        "object": (
            {"type": notification.object_type, "id": notification.object_id}
            if notification.object_type
            else None
        ),
        "created_at": created_at.isoformat().replace("+00:00", "Z") if created_at else None,
    }


# --- push: called after commit by notifications.services.notify, in gunicorn workers ----------------
def _connection_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # pragma: no cover - redis is a dependency of channels-redis
        return (OSError,)
    return (RedisConnectionError, OSError)


async def _send_all(layer, messages: list[tuple[str, dict]]) -> None:
    """group_send each message in order. A broken pooled connection (Redis restarted since the last
    push) is retried once from the message that failed, so none is sent twice."""
    retried = False
    index = 0
    while index < len(messages):
        group, payload = messages[index]
        try:
            await layer.group_send(group, {"type": "notification.message", "payload": payload})
        except _connection_errors():
            if retried:
                raise
            retried = True
            continue
        index += 1


# One event loop per process, in a daemon thread, runs every push to Redis. channels-redis keeps its Redis
# connection pool per event loop, and async_to_sync() ran each push on a fresh loop: a new Redis
# connection (connect, then close) for every notifying request, ~8 ms for an assignment's 11
# recipients (tests/bench/profile_endpoints.py). A long-lived loop keeps the pool. Created lazily and
# per PID, so a forked gunicorn worker never inherits a loop whose thread did not survive the fork.
_push_loop: asyncio.AbstractEventLoop | None = None
_push_loop_pid: int | None = None
_push_loop_lock = threading.Lock()


def _loop_for_push() -> asyncio.AbstractEventLoop:
    global _push_loop, _push_loop_pid
    with _push_loop_lock:
        if _push_loop is None or _push_loop_pid != os.getpid() or _push_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="workorder-realtime-push", daemon=True).start()
            _push_loop, _push_loop_pid = loop, os.getpid()
        return _push_loop


def push(notifications) -> None:
    """Send each notification to its recipient's open connections. Never raises."""
    messages = [(group_name(n.recipient_id), serialize(n)) for n in notifications]
    if not messages:
        return
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if not type(layer).__module__.startswith("channels_redis"):
            # The in-memory layer (embedded default, tests) must run on the loop of its consumers,
            # which async_to_sync finds when called from inside sync_to_async.
            async_to_sync(_push_with_timeout)(layer, messages)
            return
        future = asyncio.run_coroutine_threadsafe(_push_with_timeout(layer, messages), _loop_for_push())
        try:
            future.result(timeout=PUSH_TIMEOUT_SECONDS + 1)
        except BaseException:
            future.cancel()
            raise
    except Exception as exc:  # noqa: BLE001 - Redis down must never fail the request that notified
        logger.warning("realtime push of %d notification(s) skipped: %s: %s", len(messages),
                       type(exc).__name__, exc)


async def _push_with_timeout(layer, messages) -> None:
    await asyncio.wait_for(_send_all(layer, messages), timeout=PUSH_TIMEOUT_SECONDS)


# --- open WebSocket connections, readable by gunicorn's /metrics/ ----------------------------------
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


# --- the consumer (runs in daphne) ---------------------------------------------------------------
def _token_from_scope(scope) -> tuple[str | None, str | None]:
    """(token, subprotocol to accept). Header first, then subprotocol, then query string."""
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin1").strip()
    scheme, _, value = auth.partition(" ")
    subprotocols = scope.get("subprotocols") or []
    accept_subprotocol = SUBPROTOCOL if SUBPROTOCOL in subprotocols else None
    if scheme.lower() in {"token", "bearer"} and value.strip():
        return value.strip(), accept_subprotocol
    for offered in subprotocols:
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return offered[len(TOKEN_SUBPROTOCOL_PREFIX):] or None, accept_subprotocol or offered
    query = parse_qs((scope.get("query_string") or b"").decode("latin1"))
    token = (query.get("token") or [None])[0]
    return token or None, accept_subprotocol


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    if not key or len(key) > 64 or "\x00" in key:  # NUL: psycopg2 would raise ValueError (HTTP 500)
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user


@database_sync_to_async
def _mark_read(user, notification_id: int) -> bool:
    from .services import mark_read

    return mark_read(user, notification_id) is not None


class NotificationConsumer(AsyncWebsocketConsumer):
    user = None
    group = None

    async def connect(self) -> None:
        token, subprotocol = _token_from_scope(self.scope)
        user = await _user_for_token(token) if token else None
        # A close code can only be sent on an accepted socket; before accept the client would only
        # see a bare HTTP 403. Accept, then close with 4401 so clients know the token is the problem.
        await self.accept(subprotocol)
        if user is None:
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        self.user = user
        self.group = group_name(user.pk)
        try:
            try:
                await self.channel_layer.group_add(self.group, self.channel_name)
            except Exception:  # noqa: BLE001 - a pooled connection may be stale after a Redis restart
                await asyncio.sleep(0.1)
                await self.channel_layer.group_add(self.group, self.channel_name)
        except Exception as exc:  # noqa: BLE001
            logger.warning("websocket for user %s closed: channel layer unavailable: %s: %s", user.pk,
                           type(exc).__name__, exc)
            self.group = None
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await connections.change(+1)

    async def disconnect(self, code) -> None:
        if self.group is not None:
            await connections.change(-1)
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception:  # noqa: BLE001 - the group membership expires by itself
                pass
            self.group = None

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.user is None:
            return
        if text_data is None or len(text_data) > MAX_CLIENT_MESSAGE_CHARS:
            await self._send({"type": "error", "error": "expected a small JSON text message"})
            return
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested deeper than the parser allows
            await self._send({"type": "error", "error": "invalid JSON"})
            return
        if not isinstance(message, dict):
            await self._send({"type": "error", "error": "expected a JSON object"})
            return
        action = message.get("action")
        if action == "mark_read":
            notification_id = message.get("id")
            if not isinstance(notification_id, int) or isinstance(notification_id, bool) or notification_id < 1:
                await self._send({"type": "error", "error": "mark_read needs an integer id"})
                return
            ok = await _mark_read(self.user, notification_id)
            await self._send({"type": "mark_read", "id": notification_id, "ok": ok})
        else:
            await self._send({"type": "error", "error": f"unknown action {str(action)[:50]!r}"})

    async def notification_message(self, event) -> None:
        await self._send(event["payload"])

    async def _send(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))


websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
]
