"""Aggregate queries behind /api/statistics/: a fixed number of SQL queries each, whatever the data size."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Exists, IntegerField, OuterRef, Q, Subquery
from django.utils import timezone

from workorder.accounts.models import Role, User
from workorder.catalog.models import Department
from workorder.production.models import Task, TaskStatus, WorkOrderStatus

STATUSES = [choice.value for choice in TaskStatus]


def _status_counts(prefix: str = "") -> dict:
    return {status: Count("id", filter=Q(status=status)) for status in STATUSES}


def _departments() -> list[tuple[int, str]]:
    return list(Department.objects.order_by("name", "id").values_list("id", "name"))


def task_summary() -> dict:
    """Tasks by status, overall and per department (2 queries)."""
    rows = {
        row["assigned_department"]: row
        for row in Task.objects.order_by().values("assigned_department").annotate(total=Count("id"),
                                                                                 **_status_counts())
    }
    overall = {status: 0 for status in STATUSES}
    departments = []
    for dept_id, name in _departments():
        row = rows.get(dept_id, {})
        counts = {status: row.get(status, 0) for status in STATUSES}
        for status in STATUSES:
            overall[status] += counts[status]
        departments.append({"department": dept_id, "department_name": name, "total": row.get("total", 0),
                            **counts})
    return {"total": sum(overall.values()), "by_status": overall, "departments": departments}


def _start_of_today() -> dt.datetime:
    today = timezone.localdate()
    return timezone.make_aware(dt.datetime.combine(today, dt.time.min))


def department_workload() -> dict:
    """Per department: pending, in progress, completed today, operators and open tasks per operator (3 queries)."""
    since = _start_of_today()
    tasks = {
        row["assigned_department"]: row
        for row in Task.objects.order_by().values("assigned_department").annotate(
            pending=Count("id", filter=Q(status=TaskStatus.PENDING)),
            in_progress=Count("id", filter=Q(status=TaskStatus.IN_PROGRESS)),
            completed_today=Count("id", filter=Q(status=TaskStatus.COMPLETED, completed_at__gte=since)),
        )
    }
    operators = dict(
        User.objects.filter(role=Role.OPERATOR, is_active=True, department__isnull=False).order_by()
        .values("department").annotate(n=Count("id")).values_list("department", "n")
    )
    departments = []
    for dept_id, name in _departments():
        row = tasks.get(dept_id, {})
        pending, in_progress = row.get("pending", 0), row.get("in_progress", 0)
        n_operators = operators.get(dept_id, 0)
        departments.append({
            "department": dept_id,
            "department_name": name,
            "pending": pending,
            "in_progress": in_progress,
            "completed_today": row.get("completed_today", 0),
            "operators": n_operators,
            "tasks_per_operator": round((pending + in_progress) / n_operators, 2) if n_operators else None,
        })
    return {"since": since.isoformat(), "departments": departments}


def collaboration() -> dict:
    """How work flows between departments (3 queries).

    handoffs: per (from, to) department pair, how many work-order steps hand over from a task to the
    next task of the same work order (sequence + 1); `completed` of them were handed over (the earlier
    task is completed), the rest are still upstream.
    waiting: per department, the open work orders whose current step (their earliest unfinished task)
    belongs to that department.
    """
    next_department = Subquery(
        Task.objects.filter(work_order_id=OuterRef("work_order_id"), sequence=OuterRef("sequence") + 1)
        .values("assigned_department_id")[:1],
        output_field=IntegerField(),
    )
    pairs = (
        Task.objects.exclude(status=TaskStatus.CANCELLED).annotate(to_department=next_department)
        .filter(to_department__isnull=False).order_by()
        .values("assigned_department", "to_department")
        .annotate(handoffs=Count("id"), completed=Count("id", filter=Q(status=TaskStatus.COMPLETED)))
    )
    earlier_unfinished = Task.objects.filter(
        work_order_id=OuterRef("work_order_id"), sequence__lt=OuterRef("sequence"),
        status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS],
    )
    waiting = dict(
        Task.objects.filter(
            status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS],
            work_order__status__in=[WorkOrderStatus.OPEN, WorkOrderStatus.IN_PROGRESS],
        ).filter(~Exists(earlier_unfinished)).order_by()
        .values("assigned_department").annotate(n=Count("work_order_id", distinct=True))
        .values_list("assigned_department", "n")
    )
    names = dict(_departments())
    handoffs = sorted(
        (
            {
                "from_department": row["assigned_department"],
                "from_department_name": names.get(row["assigned_department"], ""),
                "to_department": row["to_department"],
                "to_department_name": names.get(row["to_department"], ""),
                "handoffs": row["handoffs"],
                "completed": row["completed"],
                "pending": row["handoffs"] - row["completed"],
            }
            for row in pairs
        ),
        key=lambda item: (item["from_department_name"], item["to_department_name"]),
    )
    return {
        "handoffs": handoffs,
        "waiting": [
            {"department": dept_id, "department_name": name, "work_orders": waiting.get(dept_id, 0)}
            for dept_id, name in names.items()
        ],
    }
