"""The WebSocket endpoint /ws/notifications/ (runs in daphne).

Protocol (docs/runtime.md has the full description):
- connect to /ws/notifications/ with the API token, preferably in a header
  (`Authorization: Token <key>`) or as a subprotocol pair (`workorder.v1`, `workorder.token.<key>`,
  what browsers can send), or as `?token=<key>` (kept out of every log line we control);
- a missing/invalid token: the socket is accepted and immediately closed with code 4401;
- server -> client: {"type": "notification", "id", "kind", "message",
  "object": {"type": "production.task", "id": 7} | null, "created_at"} (delivery.py sends them);
- client -> server: {"action": "mark_read", "id": N} -> {"type": "mark_read", "id": N, "ok": true|false}.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path

from . import services
from .connections import connections
from .delivery import group_name

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401  # like HTTP 401: missing or invalid token; do not retry with the same token
CLOSE_UNAVAILABLE = 1011  # the channel layer (Redis) is unreachable; retry later
SUBPROTOCOL = "workorder.v1"
TOKEN_SUBPROTOCOL_PREFIX = "workorder.token."
MAX_CLIENT_MESSAGE_CHARS = 4096  # daphne caps frames at 64 KiB; our own messages are far smaller


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
    return services.mark_read(user, notification_id) is not None


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
        except Exception as exc:  # noqa: BLE001 - any channel layer failure: close with 1011, the client retries
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
            except Exception:  # noqa: BLE001, S110 - the group membership expires by itself
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
