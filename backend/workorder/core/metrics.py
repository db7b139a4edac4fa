"""/metrics/: django-prometheus metrics summed over all gunicorn workers, plus domain gauges.

Domain gauges are computed at scrape time by functions the domain apps register from their
AppConfig.ready() with `register_gauges(collect)`; core knows none of them.

Access: clients whose REMOTE_ADDR is in WORKORDER_METRICS_ALLOWED_NETWORKS (loopback by default), or
any client sending `Authorization: Bearer <token>` with the token of WORKORDER_METRICS_TOKEN(_FILE).
Everything else gets 403. REMOTE_ADDR is the TCP peer of gunicorn (gunicorn does not rewrite it from
X-Forwarded-For), so scrape gunicorn's loopback port directly; nginx denies /metrics itself.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable

from django.conf import settings
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]):
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def access_allowed(request) -> bool:
    token = getattr(settings, "METRICS_TOKEN", None)
    if token:
        scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "").split("%")[0])
    except ValueError:  # unix socket peers have no address: token only
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(settings.METRICS_ALLOWED_NETWORKS)))


GaugeFunction = Callable[[], Iterable]
_gauge_functions: list[GaugeFunction] = []


def register_gauges(collect: GaugeFunction) -> None:
    """Add gauges to every /metrics/ answer: `collect()` returns prometheus_client metric families
    (e.g. GaugeMetricFamily), computed at scrape time. Call it from an AppConfig.ready()."""
    if collect not in _gauge_functions:
        _gauge_functions.append(collect)


class DomainCollector:
    """The registered gauge functions; one that fails is left out of this scrape, with a log line."""

    def collect(self):
        for collect in _gauge_functions:
            try:
                families = list(collect())
            except Exception as exc:  # noqa: BLE001 - the HTTP metrics and the other gauges are still worth serving
                logger.warning("gauges of %s skipped: %s: %s", getattr(collect, "__qualname__", collect),
                               type(exc).__name__, exc)
                continue
            yield from families


def _domain_registry():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DomainCollector())
    return registry


def metrics(request):
    if not access_allowed(request):
        return JsonResponse({"detail": "Metrics are not available to this client."}, status=403)
    import prometheus_client
    from prometheus_client import multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prometheus_client.REGISTRY
    body = prometheus_client.generate_latest(registry) + prometheus_client.generate_latest(_domain_registry())
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)
