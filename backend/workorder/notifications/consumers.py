"""The WebSocket endpoint /ws/notifications/ (runs in daphne).

Protocol (docs/runtime.md has the full description):
- connect to /ws/notifications/ with the API token, preferably in a header
  (`Authorization: Token <key>`) or as a subprotocol pair (`workorder.v1`, `workorder.token.<key>`,
  what browsers can send), or as `?token=<key>` (kept out of every log line we control);
- a missing/invalid token: the socket is accepted and immediately closed with code 4401;
- the token is checked again while the socket is open: when it is revoked (logout, password change,
  deactivation: accounts' tokens_revoked signal, delivered to every daphne process through the channel
  layer), when it expires (its deadline: idle or absolute limit; an open socket never extends it) and
  every TOKEN_RECHECK_SECONDS in case a revocation message was lost. Each ends the socket with 4401;
- at most WORKORDER_WS_MAX_CONNECTIONS_PER_USER open sockets per user over all daphne processes
  (connections.UserSocketRegistry): one more is accepted, gets an error message and is closed with 4429;
- at most WORKORDER_WS_MESSAGE_BURST client messages at once, refilled at WORKORDER_WS_MESSAGES_PER_SECOND
  (a token bucket per socket): the message beyond that gets an error message and the socket is closed
  with 4429 as well (daphne's WebSocket library refuses 1008 from a server: only 1000 and 3000-4999);
- server -> client: {"type": "notification", "id", "kind", "message",
  "object": {"type": "production.task", "id": 7} | null, "created_at"} (delivery.py sends them);
- client -> server: {"action": "mark_read", "id": N} -> {"type": "mark_read", "id": N, "ok": true|false};
- any other path under /ws/: accepted and closed with 4404.
daphne does not transmit close reasons: the error message sent just before a 4429 says which limit
was hit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.urls import path, re_path
from django.utils import timezone

from . import services
from .connections import connections, user_sockets
from .delivery import group_name

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401  # like HTTP 401: missing, invalid, expired or revoked token; log in again
CLOSE_NOT_FOUND = 4404  # like HTTP 404: no WebSocket endpoint at this path
CLOSE_TOO_MANY = 4429  # like HTTP 429: too many open sockets for this user, or messages too fast; back off
CLOSE_UNAVAILABLE = 1011  # the channel layer (Redis) is unreachable; retry later
SUBPROTOCOL = "workorder.v1"
TOKEN_SUBPROTOCOL_PREFIX = "workorder.token."
MAX_CLIENT_MESSAGE_CHARS = 4096  # daphne caps frames at 64 KiB; our own messages are far smaller
# A revocation normally arrives through the channel layer at once; this re-check (one query per open
# socket) catches one that was lost while Redis was unreachable.
TOKEN_RECHECK_SECONDS = 300


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
def _authenticate(key: str):
    """(user, token) while the key is valid, else None. touch=False: socket traffic never extends a token."""
    from workorder.accounts.tokens import authenticate_key

    return authenticate_key(key, touch=False)


class TokenBucket:
    """`burst` messages at once, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@database_sync_to_async
def _mark_read(user, notification_id: int) -> bool:
    return services.mark_read(user, notification_id) is not None


class NotificationConsumer(AsyncWebsocketConsumer):
    user = None
    group = None
    token_id = None
    closing = False
    _key = None
    _registered = False
    _token_watch: asyncio.Task | None = None
    _bucket: TokenBucket | None = None

    async def connect(self) -> None:
        key, subprotocol = _token_from_scope(self.scope)
        authenticated = await _authenticate(key) if key else None
        # A close code can only be sent on an accepted socket; before accept the client would only
        # see a bare HTTP 403. Accept, then close with 4401 so clients know the token is the problem.
        await self.accept(subprotocol)
        if authenticated is None:
            await self._close(CLOSE_UNAUTHORIZED)
            return
        user, token = authenticated
        limit = settings.WORKORDER_WS_MAX_CONNECTIONS_PER_USER
        try:
            admitted = await self._retry_once(user_sockets.admit, user.pk, self.channel_name, limit)
            self._registered = admitted
            if admitted:
                self.group = group_name(user.pk)
                await self._retry_once(self.channel_layer.group_add, self.group, self.channel_name)
        except Exception as exc:  # noqa: BLE001 - any Redis/channel layer failure: close with 1011, the client retries
            logger.warning("websocket for user %s closed: channel layer unavailable: %s: %s", user.pk,
                           type(exc).__name__, exc)
            self.group = None
            await self._release()
            await self._close(CLOSE_UNAVAILABLE)
            return
        if not admitted:
            await self._send({"type": "error", "error": f"too many open connections for this user (at most {limit})"})
            await self._close(CLOSE_TOO_MANY)
            return
        self.user, self.token_id, self._key = user, token.pk, key
        self._bucket = TokenBucket(settings.WORKORDER_WS_MESSAGES_PER_SECOND, settings.WORKORDER_WS_MESSAGE_BURST)
        self._token_watch = asyncio.get_running_loop().create_task(self._watch_token(token.deadline()))
        await connections.change(+1)

    @staticmethod
    async def _retry_once(call, *args):
        try:
            return await call(*args)
        except Exception:  # noqa: BLE001 - a pooled connection may be stale after a Redis restart
            await asyncio.sleep(0.1)
            return await call(*args)

    async def _watch_token(self, deadline) -> None:
        """Close with 4401 once the token is no longer valid: at its deadline (unless API use has moved
        it), or at a periodic re-check that finds it revoked. Cancelled by disconnect()."""
        while not self.closing:
            wait = (deadline - timezone.now()).total_seconds()
            await asyncio.sleep(min(max(wait, 0.0), TOKEN_RECHECK_SECONDS))
            try:
                authenticated = await _authenticate(self._key)
            except Exception as exc:  # noqa: BLE001 - database unreachable: keep the socket, check again later
                logger.warning("websocket token re-check failed: %s: %s", type(exc).__name__, exc)
                deadline = timezone.now() + timedelta(seconds=TOKEN_RECHECK_SECONDS)
                continue
            if authenticated is None or authenticated[1].pk != self.token_id:
                await self._close(CLOSE_UNAUTHORIZED)
                return
            deadline = authenticated[1].deadline()

    async def tokens_revoked(self, event) -> None:
        """accounts' tokens_revoked, sent by handlers.close_websockets_of_revoked_tokens to the user's group."""
        token_ids = event.get("token_ids")
        if token_ids is None or self.token_id in token_ids:
            await self._close(CLOSE_UNAUTHORIZED)

    async def _close(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            await self.close(code=code)

    async def _release(self) -> None:
        if self._registered:
            self._registered = False
            await user_sockets.release(self.channel_name)

    async def disconnect(self, code) -> None:
        self.closing = True
        if self._token_watch is not None:
            self._token_watch.cancel()
            self._token_watch = None
        await self._release()
        if self.group is not None:
            if self.user is not None:
                await connections.change(-1)
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except Exception:  # noqa: BLE001, S110 - the group membership expires by itself
                pass
            self.group = None

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.user is None or self.closing:
            return
        if not self._bucket.take():
            await self._send({"type": "error", "error": (
                f"too many messages (at most {settings.WORKORDER_WS_MESSAGES_PER_SECOND} per second, "
                f"{settings.WORKORDER_WS_MESSAGE_BURST} at once)")})
            await self._close(CLOSE_TOO_MANY)
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
        if not self.closing:
            await self._send(event["payload"])

    async def _send(self, payload: dict) -> None:
        await self.send(text_data=json.dumps(payload, separators=(",", ":")))


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Every other path: accepted and closed with 4404 (URLRouter would raise, i.e. a 500 and a traceback)."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)


websocket_urlpatterns = [
    path("ws/notifications/", NotificationConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
