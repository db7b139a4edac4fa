"""Live delivery: push() sends notifications to their recipients' open WebSockets, from any process;
close_revoked() closes the open WebSockets of revoked tokens the same way.

Called after commit by services.notify (in gunicorn workers, management commands, ...). The database
row is the truth; the push is a hint to re-fetch. If Redis is down, push() logs one line and returns,
and a client re-fetches /api/notifications/ after reconnecting. The message format is the protocol of
consumers.py (docs/runtime.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from . import connections

logger = logging.getLogger(__name__)

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


def _connection_errors() -> tuple[type[BaseException], ...]:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # pragma: no cover - redis is a dependency of channels-redis
        return (OSError,)
    return (RedisConnectionError, OSError)


async def _send_all(layer, messages: list[tuple[str, dict]]) -> None:
    """group_send each (group, event) in order. A broken pooled connection (Redis restarted since the
    last push) is retried once from the message that failed, so none is sent twice."""
    retried = False
    index = 0
    while index < len(messages):
        group, event = messages[index]
        try:
            await layer.group_send(group, event)
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
    messages = [(group_name(n.recipient_id), {"type": "notification.message", "payload": serialize(n)})
                for n in notifications]
    if messages:
        _deliver(messages, f"realtime push of {len(messages)} notification(s)",
                 recipients=[n.recipient_id for n in notifications])


def close_revoked(user_id: int, token_ids: list[int] | None) -> None:
    """Tell every open connection of the user, in every daphne process, that these tokens (None: all of
    the user's tokens) are revoked; those opened with one of them close with 4401. Never raises."""
    event = {"type": "tokens.revoked", "token_ids": None if token_ids is None else [int(t) for t in token_ids]}
    _deliver([(group_name(user_id), event)], f"closing the websockets of user {user_id}'s revoked tokens")


def _deliver(messages: list[tuple[str, dict]], what: str, recipients: list[int] | None = None) -> None:
    """recipients[i]: the user messages[i] is for, to skip users with no open socket (Redis only)."""
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        if not type(layer).__module__.startswith("channels_redis"):
            # The in-memory layer (embedded default, tests) must run on the loop of its consumers,
            # which async_to_sync finds when called from inside sync_to_async.
            async_to_sync(_push_with_timeout)(layer, messages)
            return
        future = asyncio.run_coroutine_threadsafe(_push_with_timeout(layer, messages, recipients), _loop_for_push())
        try:
            future.result(timeout=PUSH_TIMEOUT_SECONDS + 1)
        except BaseException:
            future.cancel()
            raise
    except Exception as exc:  # noqa: BLE001 - Redis down must never fail the request that notified
        logger.warning("%s skipped: %s: %s", what, type(exc).__name__, exc)


async def _push_with_timeout(layer, messages, recipients: list[int] | None = None) -> None:
    async def send() -> None:
        await _send_all(layer, messages if recipients is None else await _to_open_sockets(messages, recipients))

    await asyncio.wait_for(send(), timeout=PUSH_TIMEOUT_SECONDS)


_registry_clients: dict[asyncio.AbstractEventLoop, object] = {}


def _registry_client():
    """An asyncio Redis client for the running loop (the push loop), or None without Redis. Not
    connections.redis_client(): that one follows daphne's loop, and sharing it would recreate it at
    every switch between the two loops."""
    from django.conf import settings

    url = getattr(settings, "REDIS_URL", None)
    if not url:
        return None
    loop = asyncio.get_running_loop()
    client = _registry_clients.get(loop)
    if client is None:
        import redis.asyncio

        for closed in [other for other in _registry_clients if other.is_closed()]:
            del _registry_clients[closed]
        client = _registry_clients[loop] = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2,
                                                                         socket_timeout=2)
    return client


async def _to_open_sockets(messages: list[tuple[str, dict]], recipients: list[int]) -> list[tuple[str, dict]]:
    """The messages whose recipient has an open socket in some daphne process, by the per-user registry
    (connections.UserSocketRegistry: a socket is registered before it joins its group, and stays
    registered while open). One pipelined round trip instead of a group_send (three round trips and a
    script) per recipient: a task event notifies every supervisor of a department, most of them not
    connected. A registry Redis cannot answer filters nothing."""
    client = _registry_client()
    users = list(dict.fromkeys(recipients))
    if client is None or not users:
        return messages
    try:
        async with client.pipeline(transaction=False) as pipe:
            for user_id in users:
                pipe.exists(connections.user_sockets.key(user_id))
            found = await pipe.execute()
    except Exception as exc:  # noqa: BLE001 - unknown: send to everyone, as without the registry
        logger.debug("socket registry unreadable, pushing to every recipient: %s", exc)
        return messages
    connected = {user_id for user_id, exists in zip(users, found, strict=True) if exists}
    return [message for message, user_id in zip(messages, recipients, strict=True) if user_id in connected]
