"""Who sees what. Views start from these querysets, so a row outside them is a 404, never a leak.

- admins (is_staff / is_superuser): everything
- operators and supervisors: the tasks of their department
- makers: the work orders they created and those orders' tasks
- supervisors also see work orders awaiting (or refused) approval, which have no department yet,
  and every work order with a task in their department; operators see the work orders with a task
  in their department
- anyone else (no role, or no department): nothing
"""

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.lookups import IsNull

from workorder.accounts.models import Role

from .models import ApprovalStatus, Task, WorkOrder


def is_admin(user) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


def visible_tasks(user, queryset: QuerySet | None = None) -> QuerySet:
    queryset = Task.objects.all() if queryset is None else queryset
    if not user.is_authenticated:
        return queryset.none()
    if is_admin(user):
        return queryset
    if user.role in (Role.OPERATOR, Role.SUPERVISOR) and user.department_id:
        return queryset.filter(assigned_department_id=user.department_id)
    if user.role == Role.MAKER:
        return queryset.filter(work_order__created_by_id=user.pk)
    return queryset.none()


def visible_work_orders(user, queryset: QuerySet | None = None) -> QuerySet:
    queryset = WorkOrder.objects.all() if queryset is None else queryset
    if not user.is_authenticated:
        return queryset.none()
    if is_admin(user):
        return queryset
    if user.role == Role.MAKER:
        return queryset.filter(created_by_id=user.pk)
    if user.role in (Role.OPERATOR, Role.SUPERVISOR) and user.department_id:
        in_department = Exists(
            Task.objects.filter(work_order_id=OuterRef("pk"), assigned_department_id=user.department_id)
        )
        if user.role == Role.SUPERVISOR:
            # "awaiting approval OR has a task here" as a scalar subquery, not EXISTS: PostgreSQL turns
            # an EXISTS under OR into a hashed subplan that reads every task of the department (~20k
            # rows, 6-22 ms) for each 20-row page, while the scalar subquery probes task_dept_wo_idx
            # once per row scanned (0.3 ms). See "Profile" in docs/performance.md.
            first_department_task = Subquery(
                Task.objects.filter(work_order_id=OuterRef("pk"), assigned_department_id=user.department_id)
                .order_by().values("pk")[:1]
            )
            return queryset.filter(
                Q(approval_status__in=[ApprovalStatus.PENDING, ApprovalStatus.REJECTED])
                | Q(IsNull(first_department_task, False))
            )
        return queryset.filter(in_department)
    return queryset.none()
