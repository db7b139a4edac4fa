"""Host header validation for WebSocket handshakes (daphne), with Django's rule: settings.ALLOWED_HOSTS.

Django checks the Host header of HTTP requests (request.get_host()); a WebSocket handshake never
reaches that code, so any Host was accepted. AllowedHostsValidator refuses a handshake whose Host is
not allowed with HTTP 403 before the application runs (the way Channels' Origin check refuses one):
no traceback, one WARNING line on the `django.security.DisallowedHost` logger, where Django reports
its own refusals. Other scope types pass through untouched.
"""

from __future__ import annotations

import logging

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

logger = logging.getLogger("django.security.DisallowedHost")


def allowed_hosts() -> list[str]:
    """settings.ALLOWED_HOSTS, with Django's defaults for an empty list in DEBUG (HttpRequest.get_host)."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def host_is_allowed(headers) -> tuple[bool, str]:
    """(allowed, the Host header as text) for an ASGI header list. Missing or repeated Host: not allowed."""
    values = [value for name, value in headers if name.lower() == b"host"]
    if len(values) != 1:
        return False, ",".join(value.decode("latin1") for value in values)
    host = values[0].decode("latin1")
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts()), host


class AllowedHostsValidator:
    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            allowed, host = host_is_allowed(scope.get("headers") or [])
            if not allowed:
                logger.warning("websocket handshake refused: Host header %s is not in ALLOWED_HOSTS", repr(host)[:200])
                return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
