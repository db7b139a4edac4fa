"""The client's address, as nginx saw it.

nginx (the only client of gunicorn's unix socket, and of daphne's) sets `X-Real-IP: $remote_addr`.
That header is believed only when the TCP peer is a trusted proxy: a unix-socket peer (REMOTE_ADDR
empty: gunicorn reports "" for it, daphne no client at all) or an address in
WORKORDER_TRUSTED_PROXY_NETWORKS (loopback by default). Any other peer talks to us directly, so its
own address is the client and whatever X-Real-IP it sends is ignored. X-Forwarded-For is never used:
its first entry is whatever the client wrote.

`client_address(peer, real_ip)` is the rule on plain values, for WSGI (`request_client_address`) and
ASGI (`scope_client_address`) alike. daphne's own --proxy-headers would believe any peer, so it is
off; instead `ClientAddressMiddleware` (workorder.asgi) and daphne's server class (daphne_main.py)
put the address this rule gives into the scope's "client". Applying the rule twice changes nothing.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings

UNKNOWN = "unknown"


@functools.lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]):
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def _parse(value: str | None):
    try:
        address = ipaddress.ip_address((value or "").strip().split("%")[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address


def is_trusted_proxy(peer: str | None) -> bool:
    if not peer:  # a unix-socket peer: only nginx can connect (socket mode 0660, its group)
        return True
    address = _parse(peer)
    if address is None:
        return False
    return any(address in network for network in _networks(tuple(settings.WORKORDER_TRUSTED_PROXY_NETWORKS)))


def client_address(peer: str | None, real_ip: str | None) -> str:
    """The client's address in canonical form; "unknown" when there is none to be had."""
    if is_trusted_proxy(peer):
        forwarded = _parse(real_ip)
        if forwarded is not None:
            return str(forwarded)
    address = _parse(peer)
    return str(address) if address is not None else UNKNOWN


def request_client_address(request) -> str:
    """For a Django HttpRequest (or anything with .META)."""
    meta = request.META
    return client_address(meta.get("REMOTE_ADDR"), meta.get("HTTP_X_REAL_IP"))


def scope_client_address(scope) -> str:
    """For an ASGI scope (daphne): the peer from scope["client"], X-Real-IP from the headers."""
    client = scope.get("client")
    peer = client[0] if client else None
    real_ip = None
    for name, value in scope.get("headers") or []:
        if name.lower() == b"x-real-ip":
            real_ip = value.decode("latin1")
            break
    return client_address(peer, real_ip)


def trusted_client(scope) -> list | None:
    """The scope's "client" by the rule: [X-Real-IP, port] when a trusted proxy sent it, else None
    (keep the TCP peer). The port stays the peer's (0 for a unix socket): the client's is unknown."""
    client = scope.get("client")
    peer = client[0] if client else None
    if not is_trusted_proxy(peer):
        return None
    for name, value in scope.get("headers") or []:
        if name.lower() == b"x-real-ip":
            forwarded = _parse(value.decode("latin1"))
            if forwarded is None:
                return None
            return [str(forwarded), client[1] if client and len(client) > 1 else 0]
    return None


class ClientAddressMiddleware:
    """ASGI: scope["client"] becomes the client's address by the rule above, for every scope type
    with headers (http, websocket); a request from an untrusted peer keeps its own address."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope.get("type") in ("http", "websocket"):
            client = trusted_client(scope)
            if client is not None:
                scope = {**scope, "client": client}
        return await self.application(scope, receive, send)
