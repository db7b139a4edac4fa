"""Business rules for work orders and tasks: the only place that changes their state.

Every state change runs in transaction.atomic() and either locks the row it decides on
(select_for_update) or is a conditional UPDATE whose WHERE clause is the rule, so parallel
requests cannot both succeed where only one may (claims) nor lose an update (progress reports).
Rule violations raise DRF exceptions the API turns into JSON: ValidationError (400),
PermissionDenied (403), NotFound (404), Conflict (409).
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError

from workorder.accounts.models import Role, User
from workorder.catalog.models import RoutingStep
from workorder.core.exceptions import Conflict
from workorder.notifications.models import NotificationKind
from workorder.notifications.services import notify

from .models import (
    ApprovalStatus,
    NumberSequence,
    ProgressReport,
    Task,
    TaskStatus,
    WorkOrder,
    WorkOrderStatus,
)
from .visibility import is_admin

OPEN_WORK_ORDER_STATES = (WorkOrderStatus.OPEN, WorkOrderStatus.IN_PROGRESS)


# --- numbers ------------------------------------------------------------------------------------
def reserve_numbers(name: str, count: int = 1) -> int:
    """Reserve `count` consecutive values of counter `name`; returns the first. Row-locked until commit."""
    with transaction.atomic():
        NumberSequence.objects.get_or_create(name=name)
        NumberSequence.objects.filter(name=name).update(last_value=F("last_value") + count)
        last = NumberSequence.objects.values_list("last_value", flat=True).get(name=name)
    return last - count + 1


def work_order_number_prefix(year: int) -> str:
    return f"WO-{year}"


def format_work_order_number(year: int, value: int) -> str:
    return f"{work_order_number_prefix(year)}-{value:06d}"


def next_work_order_number(today: dt.date | None = None) -> str:
    year = (today or timezone.localdate()).year
    return format_work_order_number(year, reserve_numbers(work_order_number_prefix(year)))


# --- who is concerned ---------------------------------------------------------------------------
def supervisor_ids(department_ids) -> list[int]:
    return list(
        User.objects.filter(role=Role.SUPERVISOR, department_id__in=list(department_ids), is_active=True)
        .order_by("id").values_list("id", flat=True)
    )


def _task_concerned(task: Task, maker_id: int, extra=()) -> list[int]:
    ids = list(extra)
    if task.assigned_operator_id:
        ids.append(task.assigned_operator_id)
    ids.extend(supervisor_ids([task.assigned_department_id]))
    ids.append(maker_id)
    return ids


def _maker_id(work_order_id: int) -> int:
    return WorkOrder.objects.values_list("created_by_id", flat=True).get(pk=work_order_id)


# --- work orders --------------------------------------------------------------------------------
def require_can_create_work_order(user) -> None:
    if not (is_admin(user) or user.role in (Role.MAKER, Role.SUPERVISOR)):
        raise PermissionDenied("Only makers, supervisors and admins create work orders.")


def create_work_order(user, *, customer, product, production_quantity: int, delivery_date,
                      priority: str) -> WorkOrder:
    require_can_create_work_order(user)
    with transaction.atomic():
        return WorkOrder.objects.create(
            number=next_work_order_number(),
            customer=customer,
            product=product,
            production_quantity=production_quantity,
            delivery_date=delivery_date,
            priority=priority,
            created_by=user,
        )


PLAN_FIELDS = {"customer", "product", "production_quantity"}
SCHEDULE_FIELDS = {"delivery_date", "priority"}


def update_work_order(user, work_order_id: int, changes: dict) -> WorkOrder:
    """PATCH: the plan (customer, product, quantity) only while pending approval; the schedule
    (delivery date, priority) while the order is not finished. Makers edit their own orders."""
    if not (is_admin(user) or user.role in (Role.MAKER, Role.SUPERVISOR)):
        raise PermissionDenied("Only the maker, supervisors and admins change work orders.")
    with transaction.atomic():
        work_order = WorkOrder.objects.select_for_update().get(pk=work_order_id)
        if user.role == Role.MAKER and not is_admin(user) and work_order.created_by_id != user.pk:
            raise PermissionDenied("Makers change only their own work orders.")
        if PLAN_FIELDS & changes.keys() and work_order.approval_status != ApprovalStatus.PENDING:
            raise Conflict(
                f"Work order {work_order.number} is {work_order.approval_status}: customer, product and "
                "quantity can only change while it is pending approval."
            )
        if changes and work_order.status not in OPEN_WORK_ORDER_STATES:
            raise Conflict(f"Work order {work_order.number} is {work_order.status} and can no longer change.")
        for field, value in changes.items():
            setattr(work_order, field, value)
        if changes:
            work_order.save(update_fields=[*changes.keys(), "updated_at"])
        return work_order


def require_supervisor(user, action: str) -> None:
    if not (is_admin(user) or user.role == Role.SUPERVISOR):
        raise PermissionDenied(f"Only supervisors and admins {action}.")


def approve_work_order(user, work_order_id: int) -> WorkOrder:
    """pending -> approved, creating one task per routing step (one bulk INSERT)."""
    require_supervisor(user, "approve work orders")
    with transaction.atomic():
        work_order = WorkOrder.objects.select_for_update().get(pk=work_order_id)
        if work_order.approval_status != ApprovalStatus.PENDING:
            raise Conflict(f"Work order {work_order.number} is already {work_order.approval_status}.")
        steps = list(
            RoutingStep.objects.filter(product_id=work_order.product_id)
            .select_related("process").order_by("sequence")
        )
        if not steps:
            raise Conflict(f"Product of work order {work_order.number} has no routing; add routing steps first.")
        now = timezone.now()
        tasks = Task.objects.bulk_create(
            [
                Task(work_order=work_order, process_id=step.process_id, sequence=index,
                     assigned_department_id=step.process.department_id,
                     planned_quantity=work_order.production_quantity, created_at=now)
                for index, step in enumerate(steps, start=1)
            ]
        )
        work_order.approval_status = ApprovalStatus.APPROVED
        work_order.approved_by = user
        work_order.approved_at = now
        work_order.save(update_fields=["approval_status", "approved_by", "approved_at", "updated_at"])
        notify([work_order.created_by_id], NotificationKind.WORK_ORDER_APPROVED,
               f"Work order {work_order.number} was approved ({len(tasks)} tasks).", work_order, exclude=user)
        notify(supervisor_ids({t.assigned_department_id for t in tasks}), NotificationKind.WORK_ORDER_APPROVED,
               f"Work order {work_order.number} was approved: new tasks for your department.",
               work_order, exclude=user)
    return work_order


def reject_work_order(user, work_order_id: int, reason: str) -> WorkOrder:
    require_supervisor(user, "reject work orders")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["A reason is required to reject a work order."]})
    with transaction.atomic():
        work_order = WorkOrder.objects.select_for_update().get(pk=work_order_id)
        if work_order.approval_status != ApprovalStatus.PENDING:
            raise Conflict(f"Work order {work_order.number} is already {work_order.approval_status}.")
        work_order.approval_status = ApprovalStatus.REJECTED
        work_order.status = WorkOrderStatus.CANCELLED
        work_order.rejection_reason = reason
        work_order.approved_by = user
        work_order.approved_at = timezone.now()
        work_order.save(update_fields=["approval_status", "status", "rejection_reason", "approved_by",
                                       "approved_at", "updated_at"])
        notify([work_order.created_by_id], NotificationKind.WORK_ORDER_REJECTED,
               f"Work order {work_order.number} was rejected: {reason}", work_order, exclude=user)
    return work_order


def _start_work_order(work_order_id: int, now) -> None:
    WorkOrder.objects.filter(pk=work_order_id, status=WorkOrderStatus.OPEN).update(
        status=WorkOrderStatus.IN_PROGRESS, updated_at=now
    )


def _complete_work_order_if_done(user, work_order_id: int) -> None:
    """Called after a task completed (its row still locked by the caller's transaction)."""
    work_order = WorkOrder.objects.select_for_update().get(pk=work_order_id)
    if work_order.status not in OPEN_WORK_ORDER_STATES:
        return
    unfinished = Task.objects.filter(work_order_id=work_order_id).exclude(
        status__in=[TaskStatus.COMPLETED, TaskStatus.CANCELLED]
    )
    if unfinished.exists():
        return
    now = timezone.now()
    work_order.status = WorkOrderStatus.COMPLETED
    work_order.completed_at = now
    work_order.save(update_fields=["status", "completed_at", "updated_at"])
    notify([work_order.created_by_id], NotificationKind.WORK_ORDER_COMPLETED,
           f"Work order {work_order.number} is completed.", work_order, exclude=user)


# --- tasks --------------------------------------------------------------------------------------
def _locked_task(task_id: int) -> Task:
    try:
        return Task.objects.select_for_update().get(pk=task_id)
    except Task.DoesNotExist:
        raise NotFound() from None


def claim_task(user, task_id: int) -> Task:
    """An operator takes a pending, unassigned task of their own department: one conditional UPDATE,
    so of two concurrent claims exactly one matches the row and the other gets 409."""
    if user.role != Role.OPERATOR or not user.department_id:
        raise PermissionDenied("Only operators of a department claim tasks.")
    now = timezone.now()
    with transaction.atomic():
        claimed = Task.objects.filter(
            pk=task_id, status=TaskStatus.PENDING, assigned_operator__isnull=True,
            assigned_department_id=user.department_id,
        ).update(status=TaskStatus.IN_PROGRESS, assigned_operator=user, started_at=now, updated_at=now)
        task = Task.objects.select_related("work_order").filter(pk=task_id).first()
        if task is None:
            raise NotFound()
        if not claimed:
            if task.assigned_department_id != user.department_id:
                raise PermissionDenied("This task belongs to another department.")
            if task.assigned_operator_id and task.status != TaskStatus.COMPLETED:
                raise Conflict("This task is already assigned to an operator.")
            raise Conflict(f"Only pending tasks can be claimed; this one is {task.status}.")
        _start_work_order(task.work_order_id, now)
        notify(_task_concerned(task, task.work_order.created_by_id), NotificationKind.TASK_CLAIMED,
               f"{user.username} claimed task {task.sequence} ({task.process.name}) of {task.work_order.number}.",
               task, exclude=user)
    return task


def assign_task(user, task_id: int, operator_id) -> Task:
    """A supervisor (of the task's department) or admin gives the task to an operator of that department."""
    require_supervisor(user, "assign tasks")
    operator = User.objects.filter(pk=operator_id, is_active=True).first() if isinstance(operator_id, int) else None
    if operator is None or operator.role != Role.OPERATOR:
        raise ValidationError({"operator_id": [f"There is no active operator with id {operator_id}."]})
    now = timezone.now()
    with transaction.atomic():
        task = _locked_task(task_id)
        if not is_admin(user) and task.assigned_department_id != user.department_id:
            raise PermissionDenied("Supervisors assign only the tasks of their own department.")
        if operator.department_id != task.assigned_department_id:
            raise ValidationError({"operator_id": [
                f"Operator {operator.username} is not in the task's department "
                f"({task.assigned_department.name}); choose an operator of that department."
            ]})
        if task.status not in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
            raise Conflict(f"Only pending or in-progress tasks can be assigned; this one is {task.status}.")
        previous_operator_id = task.assigned_operator_id
        task.assigned_operator = operator
        fields = ["assigned_operator", "updated_at"]
        if task.status == TaskStatus.PENDING:
            task.status = TaskStatus.IN_PROGRESS
            task.started_at = now
            fields += ["status", "started_at"]
        task.save(update_fields=fields)
        _start_work_order(task.work_order_id, now)
        work_order = task.work_order
        extra = [previous_operator_id] if previous_operator_id and previous_operator_id != operator.pk else []
        notify(_task_concerned(task, work_order.created_by_id, extra), NotificationKind.TASK_ASSIGNED,
               f"Task {task.sequence} ({task.process.name}) of {work_order.number} was assigned to "
               f"{operator.username}.", task, exclude=user)
    return task


def update_progress(user, task_id: int, quantity: int) -> ProgressReport:
    """Record `quantity` units just produced. The task row is locked for the whole check-and-write,
    so parallel reports are applied one after the other and none is lost."""
    if not isinstance(quantity, int) or quantity <= 0:
        raise ValidationError({"quantity": ["Report a positive number of units."]})
    with transaction.atomic():
        task = _locked_task(task_id)
        if task.status != TaskStatus.IN_PROGRESS:
            raise Conflict(f"Progress can only be reported on an in-progress task; this one is {task.status}.")
        if task.assigned_operator_id != user.pk:
            raise PermissionDenied("Only the operator assigned to this task reports its progress.")
        total = task.completed_quantity + quantity
        if total > task.planned_quantity:
            remaining = task.planned_quantity - task.completed_quantity
            raise Conflict(
                f"Reporting {quantity} would exceed the planned quantity {task.planned_quantity} "
                f"({task.completed_quantity} done, at most {remaining} more); nothing was recorded."
            )
        previous = (
            Task.objects.filter(work_order_id=task.work_order_id, sequence__lt=task.sequence)
            .order_by("-sequence").values_list("completed_quantity", "sequence").first()
        )
        if previous is not None and total > previous[0]:
            raise Conflict(
                f"The previous step (sequence {previous[1]}) has completed only {previous[0]} units; this step "
                f"cannot exceed that ({task.completed_quantity} done, {quantity} reported); nothing was recorded."
            )
        now = timezone.now()
        report = ProgressReport.objects.create(task=task, operator=user, quantity=quantity, created_at=now)
        task.completed_quantity = total
        fields = ["completed_quantity", "updated_at"]
        if total == task.planned_quantity:
            task.status = TaskStatus.COMPLETED
            task.completed_at = now
            fields += ["status", "completed_at"]
        task.save(update_fields=fields)
        if task.status == TaskStatus.COMPLETED:
            _notify_task_completed(user, task)
            _complete_work_order_if_done(user, task.work_order_id)
    report.task = task
    return report


def complete_task(user, task_id: int) -> Task:
    """Close an in-progress task (also short of its planned quantity): its operator, a supervisor of
    its department or an admin."""
    with transaction.atomic():
        task = _locked_task(task_id)
        allowed = (
            is_admin(user)
            or task.assigned_operator_id == user.pk
            or (user.role == Role.SUPERVISOR and user.department_id == task.assigned_department_id)
        )
        if not allowed:
            raise PermissionDenied("Only the assigned operator, a supervisor of the department or an admin "
                                   "completes a task.")
        if task.status != TaskStatus.IN_PROGRESS:
            raise Conflict(f"Only in-progress tasks can be completed; this one is {task.status}.")
        task.status = TaskStatus.COMPLETED
        task.completed_at = timezone.now()
        task.save(update_fields=["status", "completed_at", "updated_at"])
        _notify_task_completed(user, task)
        _complete_work_order_if_done(user, task.work_order_id)
    return task


def _notify_task_completed(user, task: Task) -> None:
    work_order = task.work_order
    notify(_task_concerned(task, work_order.created_by_id), NotificationKind.TASK_COMPLETED,
           f"Task {task.sequence} ({task.process.name}) of {work_order.number} is completed "
           f"({task.completed_quantity}/{task.planned_quantity}).", task, exclude=user)
