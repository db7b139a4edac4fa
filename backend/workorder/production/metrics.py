"""Production gauges for /metrics/ (registered in ProductionConfig.ready()): two aggregate queries."""

from __future__ import annotations

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from .models import Task, WorkOrder
from .states import WORK_ORDER, TaskStatus


def gauges() -> list[GaugeMetricFamily]:
    by_status = dict.fromkeys(TaskStatus.values, 0)
    for row in Task.objects.order_by().values("status").annotate(n=Count("id")):
        by_status[row["status"]] = row["n"]
    tasks = GaugeMetricFamily("workorder_tasks", "Tasks by status", labels=["status"])
    for status, n in sorted(by_status.items()):
        tasks.add_metric([status], n)
    open_orders = WorkOrder.objects.filter(status__in=WORK_ORDER.open_states).count()
    return [tasks, GaugeMetricFamily("workorder_open_work_orders", "Work orders open or in progress",
                                     value=open_orders)]
