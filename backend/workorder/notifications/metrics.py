"""Notification gauges for /metrics/ (registered in NotificationsConfig.ready())."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from .connections import websocket_connection_count
from .models import Notification


def unread_gauge() -> list[GaugeMetricFamily]:
    unread = Notification.objects.filter(read_at__isnull=True).count()
    return [GaugeMetricFamily("workorder_unread_notifications", "Notifications not read yet", value=unread)]


def websocket_gauge() -> list[GaugeMetricFamily]:
    """Absent from a scrape when Redis cannot be read."""
    count = websocket_connection_count()
    if count is None:
        return []
    return [GaugeMetricFamily("workorder_websocket_connections",
                              "Open WebSocket connections over all daphne processes", value=count)]
