"""/metrics/: django-prometheus metrics summed over all gunicorn workers, plus domain gauges.

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


class DomainCollector:
    """Gauges computed at scrape time with three small aggregate queries and one Redis SCAN."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            yield from self._database_gauges(GaugeMetricFamily)
        except Exception as exc:  # noqa: BLE001 - the HTTP metrics are still worth serving
            logger.warning("domain gauges skipped: %s: %s", type(exc).__name__, exc)
        from workorder.notifications.realtime import websocket_connection_count

        count = websocket_connection_count()
        if count is not None:
            yield GaugeMetricFamily("workorder_websocket_connections",
                                    "Open WebSocket connections over all daphne processes", value=count)

    def _database_gauges(self, Gauge):
        from django.db.models import Count

        from workorder.notifications.models import Notification
        from workorder.production.models import Task, TaskStatus, WorkOrder, WorkOrderStatus

        by_status = {status: 0 for status in TaskStatus.values}
        for row in Task.objects.order_by().values("status").annotate(n=Count("id")):
            by_status[row["status"]] = row["n"]
        tasks = Gauge("workorder_tasks", "Tasks by status", labels=["status"])
        for status, n in sorted(by_status.items()):
            tasks.add_metric([status], n)
        open_orders = WorkOrder.objects.filter(
            status__in=[WorkOrderStatus.OPEN, WorkOrderStatus.IN_PROGRESS]).count()
        unread = Notification.objects.filter(read_at__isnull=True).count()
        return [
            tasks,
            Gauge("workorder_open_work_orders", "Work orders open or in progress", value=open_orders),
            Gauge("workorder_unread_notifications", "Notifications not read yet", value=unread),
        ]


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
