"""Refuse to load-test hosts that look like production (unless --allow-production)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_NON_PRODUCTION_MARKERS = re.compile(
    r"(^|[.-])(staging|stage|stg|test|testing|dev|develop|qa|uat|sandbox|preprod|pre-prod|demo|loadtest|perf|local|localhost|internal|lan|example)([.-]|\d|$)"
)
_PRODUCTION_MARKERS = re.compile(r"(^|[.-])(prod|production|live|www)([.-]|\d|$)")


def production_reason(url: str) -> str | None:
    """Why ``url`` looks like production, or None when it looks like a test target.

    Loopback, private and link-local addresses, single-label names (``localhost``, a VM called
    ``server``), ``*.local``/``*.localhost``/``*.internal``/``*.test`` and names with a staging marker
    (staging, stage, test, dev, qa, uat, sandbox, preprod, ...) pass. Anything else - a public
    address, a public name without such a marker, or any name containing prod/production/live/www -
    looks like production.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {url!r}"
    host = parts.hostname.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_loopback or address.is_private or address.is_link_local:
            return None
        return f"{host} is a public IP address"
    if _PRODUCTION_MARKERS.search(host) and not re.search(r"(^|[.-])pre-?prod", host):
        return f"{host} contains a production marker (prod/production/live/www)"
    if "." not in host:
        return None
    if host.endswith((".local", ".localhost", ".internal", ".test", ".lan", ".home.arpa", ".example")):
        return None
    if _NON_PRODUCTION_MARKERS.search(host):
        return None
    return f"{host} is a public name without a staging/test marker"
