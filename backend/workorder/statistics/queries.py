"""Aggregate queries behind /api/statistics/: a fixed number of SQL queries each, whatever the data size."""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from workorder.accounts.models import Role, User
from workorder.catalog.models import Department
from workorder.production.models import Task, WorkOrder
from workorder.production.states import TASK, WORK_ORDER, TaskStatus

STATUSES = list(TaskStatus.values)


def _status_counts() -> dict:
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


HANDOFFS_SQL = """
    SELECT a.assigned_department_id, b.assigned_department_id, COUNT(*),
           COUNT(CASE WHEN a.status = %(completed)s THEN 1 END)
    FROM {task} a
    JOIN {task} b ON b.work_order_id = a.work_order_id AND b.sequence = a.sequence + 1
    WHERE a.status <> %(cancelled)s
    GROUP BY a.assigned_department_id, b.assigned_department_id
"""

WAITING_SQL = """
    SELECT t.assigned_department_id, COUNT(*)
    FROM (
        SELECT u.work_order_id, MIN(u.sequence) AS sequence
        FROM {task} u JOIN {work_order} w ON w.id = u.work_order_id
        WHERE u.status IN ({open_tasks}) AND w.status IN ({open_work_orders})
        GROUP BY u.work_order_id
    ) current_step
    JOIN {task} t ON t.work_order_id = current_step.work_order_id AND t.sequence = current_step.sequence
    GROUP BY t.assigned_department_id
"""


def _in_list(params: dict, prefix: str, values) -> str:
    """Named placeholders for `IN (...)` (SQLite and PostgreSQL alike); the values go into params."""
    names = []
    for index, value in enumerate(values):
        params[f"{prefix}_{index}"] = str(value)
        names.append(f"%({prefix}_{index})s")
    return ", ".join(names)


def collaboration() -> dict:
    """How work flows between departments (3 queries: hash joins, no per-row subqueries).

    handoffs: per (from, to) department pair, how many work-order steps hand over from a task to the
    next task of the same work order (sequence + 1); `completed` of them were handed over (the earlier
    task is completed), `pending` are still upstream. Cancelled tasks are left out.
    waiting: per department, the open work orders whose current step (their earliest unfinished task)
    belongs to that department.
    """
    params = {"completed": TaskStatus.COMPLETED.value, "cancelled": TaskStatus.CANCELLED.value}
    sql_parts = {"task": connection.ops.quote_name(Task._meta.db_table),
                 "work_order": connection.ops.quote_name(WorkOrder._meta.db_table),
                 "open_tasks": _in_list(params, "open_task", TASK.open_states),
                 "open_work_orders": _in_list(params, "open_work_order", WORK_ORDER.open_states)}
    with connection.cursor() as cursor:
        cursor.execute(HANDOFFS_SQL.format(**sql_parts), params)
        pairs = cursor.fetchall()
        cursor.execute(WAITING_SQL.format(**sql_parts), params)
        waiting = dict(cursor.fetchall())
    names = dict(_departments())
    handoffs = sorted(
        (
            {
                "from_department": from_id,
                "from_department_name": names.get(from_id, ""),
                "to_department": to_id,
                "to_department_name": names.get(to_id, ""),
                "handoffs": total,
                "completed": completed,
                "pending": total - completed,
            }
            for from_id, to_id, total, completed in pairs
        ),
        key=lambda item: (item["from_department_name"], item["to_department_name"], item["from_department"],
                          item["to_department"]),
    )
    return {
        "handoffs": handoffs,
        "waiting": [
            {"department": dept_id, "department_name": name, "work_orders": waiting.get(dept_id, 0)}
            for dept_id, name in names.items()
        ],
    }
