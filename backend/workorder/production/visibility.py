"""Who sees what. Views start from these querysets, so a row outside them is a 404, never a leak.

- admins (is_staff / is_superuser): everything
- operators and supervisors: the tasks of their department
- makers: the work orders they created and those orders' tasks
- supervisors also see work orders awaiting (or refused) approval, which have no department yet,
  and every work order with a task in their department; operators see the work orders with a task
  in their department
- anyone else (no role, or no department): nothing
"""

from django.db.models import Exists, OuterRef, Q, QuerySet

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
            return queryset.filter(
                Q(approval_status__in=[ApprovalStatus.PENDING, ApprovalStatus.REJECTED]) | in_department
            )
        return queryset.filter(in_department)
    return queryset.none()
